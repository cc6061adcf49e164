"""The routed hierarchical SAE of Muchane et al. (H-SAE, arXiv 2506.01197).

A TopK parent SAE; every active parent p routes the input into its own s-dimensional
subspace ``u = W_down[p] (x - b_dec)`` where a tiny SAE over ``n_children`` unit atoms
keeps its single best child. The child decodes through ``W_up[p]`` back to input space
and adds to the parent's reconstruction:

    x_hat = b_dec + sum_{p in K} z_p D[p] + sum_{p in K} c_p (D_child[p, c(p)] @ W_up[p])

Children are only ever computed for the k active parents of a row (see ``grouped.py``);
no tensor scales with ``n_parents * n_children`` or ``n_parents * s`` per sample.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    Codes, Dictionary, Encoded, LossOutput, SAEBase, auxk_loss, bi_orthogonality, centre,
    level_l0, native_sparse, normalize_rows_, pre_activations, remove_parallel_grad_,
    sparse_decode, spread_unit_vectors, squared_errors, topk_select, update_dead_counter_,
)
from .fused import kernels_for
from .grouped import make_route, routed_down, routed_up, select_children
from .workspace import Workspace


class RoutedCodes(NamedTuple):
    """The model's own codes of a batch, both levels laid out per parent slot.

    ``child_values`` are in the child's subspace units (they multiply
    ``D_child[c] @ W_up[p]``, not a unit vector); ``forward`` folds the norms in.
    """

    parent_values: Tensor
    """(B, k) parent activations (0 in unused slots)."""
    parent_indices: Tensor
    """(B, k) parent ids."""
    child_values: Tensor | None
    """(B, k) activation of the child chosen under the parent in the same slot (None
    from ``_forward(x, slots=False)``, as below)."""
    child_indices: Tensor | None
    """(B, k) flat child ids ``parent * n_children + child``."""
    x_hat: Tensor
    """(B, d) full reconstruction."""
    x_hat_parents: Tensor
    """(B, d) reconstruction from the parents (and bias) alone."""


class _Internals(NamedTuple):
    codes: RoutedCodes
    enc: Encoded  # parent pre-activations (B, m)
    use_native: bool  # the parents' sparse gradients through kernels.c (native_sparse)
    child_pre_active: Tensor | None  # (n_tiles, T, C) child pre-activations (L1 only)
    child_act: Tensor  # (n_tiles, T) the chosen child's activation per tile slot (0: padding)


class RoutedSAE(SAEBase):
    """Parameters and forward pass of the routed H-SAE; no training logic."""

    cumulative: ClassVar[bool] = True  # x_hat = parents' reconstruction + children's
    # compile_mode (SAEBase) also picks the child path's kernels: ``fused.kernels_for``.

    def __init__(self, config, *, device=None, dtype=torch.float32):
        super().__init__()
        self.config = config
        d, m = config.n_features, config.n_parents
        c, s = config.n_children, config.subspace_dim
        kw = {"device": device, "dtype": dtype}
        self.W_enc = nn.Parameter(torch.empty(m, d, **kw))
        self.b_enc = nn.Parameter(torch.empty(m, **kw))
        self.W_dec = nn.Parameter(torch.empty(m, d, **kw))  # unit rows
        self.b_dec = nn.Parameter(
            torch.empty(d, **kw), requires_grad=not config.fixed_decoder_bias
        )
        self.W_down = nn.Parameter(torch.empty(m, s, d, **kw))  # x -> parent subspace
        self.W_up = nn.Parameter(torch.empty(m, s, d, **kw))  # parent subspace -> x
        self.E_child = nn.Parameter(torch.empty(m, c, s, **kw))  # child encoder
        self.D_child = nn.Parameter(torch.empty(m, c, s, **kw))  # unit child atoms
        self.register_buffer("tokens_since_fired", torch.zeros(m, dtype=torch.long, device=device))
        self.register_buffer("loss_scale", torch.ones((), **kw))
        self.workspace = Workspace()  # reused CPU buffers, not part of the state

    def integer_ranges(self) -> dict[str, tuple[int, int | None]]:
        """Valid ``[low, high)`` of every integer tensor of ``state_dict()`` (None: no bound).

        Persistence refuses files whose integer tensors leave these ranges; an architecture
        that stores indices (a tree's parent of each node) lists them here, with
        ``low=-1`` where -1 marks an unassigned slot.
        """
        return {"tokens_since_fired": (0, None)}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random init; every transposed pair starts equal (as in paper 1's code).

        Each parent's subspace starts orthonormal and its child atoms start spread over
        the unit sphere of the subspace: a child that never wins the top-1 receives no
        gradient, so atoms that start bunched together tend to stay unused.
        """
        dtype = self.W_dec.dtype
        decoder = torch.randn(self.W_dec.shape, generator=generator, dtype=dtype)
        normalize_rows_(decoder)
        m, s, d = self.W_down.shape
        gaussian = torch.randn(m, d, s, generator=generator, dtype=dtype)
        down = torch.linalg.qr(gaussian).Q.transpose(1, 2)  # (m, s, d) orthonormal rows
        if s > d:  # more subspace dims than features: QR gives d rows, pad with unit noise
            extra = torch.randn(m, s - d, d, generator=generator, dtype=dtype)
            normalize_rows_(extra)
            down = torch.cat([down, extra], dim=1)
        atoms = spread_unit_vectors(self.D_child.shape[1], s, m, generator, dtype)  # (m, C, s)
        for name, value in {
            "W_dec": decoder,
            "W_enc": decoder,  # encoder = decoder transpose (Gao et al.)
            "W_down": down,
            "W_up": down,  # W_up = W_down^T
            "D_child": atoms,
            "E_child": atoms,  # E_child = D_child^T
        }.items():
            getattr(self, name).copy_(value)
        self.b_enc.zero_()
        self.b_dec.zero_()
        self.tokens_since_fired.zero_()
        self.loss_scale.fill_(1.0)


    # ---------------------------------------------------------------- forward
    def _forward(self, x: Tensor, slots: bool = True) -> _Internals:
        """Codes and what the loss needs; ``slots=False`` (the loss): no (B, k) child
        values and indices, which it does not read (~3-6 ms of gathers at B = 4096)."""
        cfg = self.config
        B, C = x.shape[0], cfg.n_children
        xc, center = centre(x, self.b_dec, shortcut=cfg.l1_coef == 0)  # (B, d)
        use_native = native_sparse(self.compile_mode, x)
        # The L1 on every pre-activation needs the dense encoder gradient.
        enc = pre_activations(xc, self.W_enc, self.b_enc, dense=cfg.l1_coef > 0,
                              out=self.workspace.get("pre", (B, cfg.n_parents), x.dtype, x.device),
                              use_native=use_native, center=center)
        values, indices = topk_select(enc, cfg.k)  # (B, k)
        x_par = sparse_decode(values, indices, self.W_dec, use_native) + self.b_dec  # (B, d)

        # Children of the active (row, parent) pairs only, tiled by parent.
        # Multiply-adds of the child path's projections in a training step (forward and
        # backward of down and up, ~6 k s d per row): what compiling them can save.
        pair_macs = 6 * B * cfg.k * cfg.subspace_dim * cfg.n_features
        route = make_route(values.detach(), indices, cfg.n_parents, self.workspace,
                           kernels=kernels_for(self.compile_mode, x.device, pair_macs))
        g = route.tiling.expert  # (n_tiles,)
        # Centred once for both encoders; without a wanted input gradient b_dec's comes
        # per expert from routed_down instead of through a (B, d) gradient of xc.
        u = routed_down(xc if x.requires_grad else xc.detach(), self.b_dec, self.W_down, route)
        if route.kernels == "native" and cfg.l1_coef == 0:  # one C pass, no (n_tiles, T, C)
            v, child_act, child_arg = select_children(u, self.E_child, self.D_child, route)
            child_pre_active = None
        else:
            child_pre = torch.bmm(u, self.E_child[g].transpose(1, 2))  # (n_tiles, T, C)
            child_act, child_arg = F.relu(child_pre).max(dim=-1)  # (n_tiles, T)
            child_act = child_act * route.tiling.valid
            atom = self.D_child[g[:, None], child_arg]  # (n_tiles, T, s)
            v = child_act[..., None] * atom  # (n_tiles, T, s)
            child_pre_active = child_pre * route.tiling.valid[..., None]  # for the L1 term
        x_hat = routed_up(v, self.W_up, route, base=x_par)  # (B, d): x_par + children

        child_values = child_indices = None
        if slots:  # back to the (B, k) slot layout of the parents
            child_values = child_act.reshape(-1)[route.slot_pos] * route.slot_active  # (B, k)
            child_indices = indices * C + child_arg.reshape(-1)[route.slot_pos]  # (B, k)
        codes = RoutedCodes(values, indices, child_values, child_indices, x_hat, x_par)
        return _Internals(codes, enc, use_native, child_pre_active, child_act)

    def forward(self, x: Tensor) -> Codes:
        """Codes per level; child values multiply the children's unit directions."""
        c = self._forward(x).codes
        # ||D_child[c] @ W_up[p]|| folded into the value: (B, k) * (B, k)
        child_values = c.child_values * self.child_norms()[c.child_indices]
        return Codes([c.parent_values, child_values], [c.parent_indices, c.child_indices],
                     c.x_hat, [c.x_hat_parents, c.x_hat])

    # ------------------------------------------------------------------- loss
    def loss(self, x: Tensor) -> LossOutput:
        """Paper 1's objective plus AuxK on dead parents (Gao et al.).

        ``||x - x_hat||^2 + beta ||x - x_hat_parents||^2`` per row, divided by the data
        variance measured at initialisation so the terms read as fractions of variance.
        """
        cfg = self.config
        inner = self._forward(x, slots=False)
        codes = inner.codes
        B = x.shape[0]
        sq_error, sq_error_parents = squared_errors(x, codes.x_hat, codes.x_hat_parents,
                                                   workspace=self.workspace)
        recon = sq_error / (B * self.loss_scale)
        parents_only = sq_error_parents / (B * self.loss_scale)
        total = recon + cfg.beta * parents_only
        terms = {"recon": recon, "parents_only": parents_only}

        update_dead_counter_(self.tokens_since_fired, codes.parent_indices, codes.parent_values)
        if cfg.aux_coef > 0:
            dead = self.tokens_since_fired > cfg.dead_tokens
            aux = auxk_loss(x, codes.x_hat, sq_error, inner.enc, dead, cfg.aux_k, self.W_dec,
                            use_native=inner.use_native)
            total = total + cfg.aux_coef * aux
            terms["auxk"] = aux
        if cfg.l1_coef > 0:
            # L1 on every parent pre-activation and the active experts' children, in
            # units of the data's RMS norm so the coefficient is scale-free.
            l1 = F.relu(inner.enc.pre).sum() + F.relu(inner.child_pre_active).sum()
            l1 = l1 / (B * self.loss_scale.sqrt())
            total = total + cfg.l1_coef * l1
            terms["l1"] = l1
        if cfg.ortho_coef > 0:
            ortho = bi_orthogonality(self.W_enc, self.W_dec)
            total = total + cfg.ortho_coef * ortho
            terms["ortho"] = ortho
        # Every tile slot is an active parent's: its nonzero child activations per row.
        children = (inner.child_act.detach() != 0).sum().to(x.dtype) / B
        l0 = torch.stack([level_l0([codes.parent_values])[0], children])
        return LossOutput(total, sq_error.detach(), l0, {k: v.detach() for k, v in terms.items()})

    # ---------------------------------------------------------- constraints
    def before_optimizer_step(self) -> None:
        remove_parallel_grad_(self.W_dec)
        remove_parallel_grad_(self.D_child)

    def after_optimizer_step(self) -> None:
        normalize_rows_(self.W_dec)
        normalize_rows_(self.D_child)


    # ------------------------------------------------------------- exports
    @torch.no_grad()
    def dictionary(self, out: list[Tensor] | None = None) -> Dictionary:
        """Parents' rows and each child's unit direction ``D_child[c] @ W_up[p]`` in
        input space; every child's parent is fixed: child ``p * C + c`` belongs to p."""
        m, C = self.W_dec.shape[0], self.D_child.shape[1]
        parents = self.W_dec.detach()
        if out is not None:
            out[0].copy_(parents)
            parents = out[0]
        children, _ = self.child_directions(out=None if out is None else out[1])
        device = self.W_dec.device
        parent_of = torch.arange(m, device=device).repeat_interleave(C)
        none = torch.full((m,), -1, dtype=torch.long, device=device)
        bias = self.b_dec.detach()
        return Dictionary([parents, children], [none, parent_of], [bias, bias])

    @torch.no_grad()
    def child_directions(self, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Each child's decoder vector in input space, as unit rows and norms.

        Returns (directions (m * C, d), norms (m * C,)): ``D_child[p, c] @ W_up[p]``
        normalised; ``out`` (m * C, d) receives the directions when given.
        """
        m, C, s = self.D_child.shape
        norms = self.child_norms()  # (m * C,)
        scaled = self.D_child / norms.clamp_min(1e-12).view(m, C, 1)  # (m, C, s)
        target = None if out is None else out.view(m, C, -1)
        directions = torch.bmm(scaled, self.W_up, out=target)  # (m, C, d)
        return directions.reshape(m * C, -1), norms

    @torch.no_grad()
    def child_norms(self) -> Tensor:
        """``||D_child[p, c] @ W_up[p]||`` for all children, (m * C,), via s x s Grams."""
        gram = torch.bmm(self.W_up, self.W_up.transpose(1, 2))  # (m, s, s)
        sq = torch.einsum("pcs,pst,pct->pc", self.D_child, gram, self.D_child)  # (m, C)
        return sq.clamp_min(0).sqrt().reshape(-1)
