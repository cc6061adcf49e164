"""The model interface, the one code form, and the pieces every architecture shares.

Only torch is imported here. Shapes: B = batch, d = features, m = dictionary width,
k = active latents per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fused import kernels_for
from .sparse_ops import select_linear, sparse_decode
from .workspace import Workspace


class Codes(NamedTuple):
    """What ``model(x)`` returns, for every architecture: per level, coarsest first."""

    values: list[Tensor]
    """Per level (B, k_l) activations (0 in unused slots). They multiply the level's
    *unit* decoder rows (``Dictionary.components``), whatever the model's internal
    parametrisation, so codes are comparable across architectures."""
    indices: list[Tensor]
    """Per level (B, k_l) feature ids within the level."""
    x_hat: Tensor
    """(B, d) the model's reconstruction (what ``score`` measures)."""
    x_hats: list[Tensor]
    """Per level (B, d) the reconstruction at that level: of the levels up to it for a
    ``cumulative`` model, of that level alone otherwise."""


class Dictionary(NamedTuple):
    """A model's decoder exported for the fitted attributes, per level, coarsest first."""

    components: list[Tensor]
    """Per level (width_l, d) unit-norm decoder directions."""
    parent_index: list[Tensor]
    """Per level (width_l,) int64 parent of each feature in the level above; -1 = none."""
    intercepts: list[Tensor]
    """Per level (d,) the decoder bias of that level's reconstruction."""


class LossOutput(NamedTuple):
    """What ``model.loss(x)`` returns to the training loop."""

    loss: Tensor
    """Scalar to minimise (has a graph)."""
    sq_error: Tensor
    """``sum ||x - x_hat||^2`` over the batch for the main reconstruction (no graph)."""
    l0: Tensor
    """(n_levels,) mean active latents per row of every level (no graph)."""
    terms: dict[str, Tensor]
    """Each term of the loss, detached, for logging."""


class SAEModel(Protocol):
    """What the training loop and the estimators may call on a model; nothing else.

    A model is built as ``Model(config, device=..., dtype=...)`` from its frozen config
    (``_config.py``), whose ``widths`` give the level widths.
    """

    config: object
    cumulative: ClassVar[bool]
    """True when levels add up (level l reconstructs with levels 0..l: routed); False
    when every level reconstructs the input on its own (tree HSAE)."""

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random initial weights drawn from ``generator`` only."""

    def init_from_data(self, x: Tensor) -> None:
        """Biases and loss scale from a sample of scaled rows (B, d)."""

    def forward(self, x: Tensor) -> Codes:
        """Codes of a batch of scaled rows (B, d)."""

    def loss(self, x: Tensor) -> LossOutput:
        """The training objective on a batch; updates dead-latent counters."""

    def before_optimizer_step(self) -> None:
        """Adjust gradients (e.g. drop the radial part for unit-norm decoders)."""

    def after_optimizer_step(self) -> None:
        """Re-impose constraints (unit decoder rows), advance internal schedules."""

    def on_fit_end(self) -> None:
        """Bring derived structure up to date at the end of ``fit`` (e.g. the tree)."""

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups whose gradient norms are clipped separately."""

    def lr_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups with their own learning rate, one per entry of the config's
        ``lr_widths``; together every parameter once, in ``parameters()`` order."""

    def integer_ranges(self) -> dict[str, tuple[int, int | None]]:
        """Valid ``[low, high)`` of every integer tensor of ``state_dict()`` (None: no
        bound; ``low=-1`` where -1 marks an unassigned slot). Persistence refuses files
        outside them."""

    def dictionary(self, out: list[Tensor] | None = None) -> Dictionary:
        """The decoder per level; ``out`` (CPU tensors of the right shapes) receives the
        components when given, so a caller can update its arrays in place."""


class SAEBase(nn.Module):
    """Defaults of the interface that most models share: a decoder bias ``b_dec`` and a
    ``loss_scale`` set from data, nothing to do at the end of a fit, and one
    gradient-clipping group and learning rate."""

    compile_mode: bool | str = False
    """``True``, ``False`` or ``"auto"``, the estimator's ``compile``: which kernels run,
    picked per step (``native_sparse``; the routed child path: ``fused.kernels_for``)."""

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Set b_dec to the geometric median and the loss scale to the data variance."""
        if not self.config.fixed_decoder_bias:
            self.b_dec.copy_(geometric_median(x))
        var = (x - x.mean(0)).pow(2).sum(1).mean()
        if var <= 0:  # constant data: fall back to the mean squared norm (or 1)
            var = (x - self.b_dec).pow(2).sum(1).mean()
        self.loss_scale.fill_(float(var) if var > 0 else 1.0)

    def on_fit_end(self) -> None:
        pass

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]

    def lr_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]


def level_l0(values: list[Tensor]) -> Tensor:
    """(n_levels,) mean number of nonzero codes per row of each level, detached."""
    return torch.stack([(v.detach() != 0).sum(dim=1).to(v.dtype).mean() for v in values])


class Encoded(NamedTuple):
    """Pre-activations of a linear encoder and a way to differentiate selected ones."""

    pre: Tensor
    """(B, m) ``x @ W.T + b``; carries a graph only when the encoder was dense."""
    select: Callable[[Tensor], Tensor]
    """indices (B, j) -> the pre-activations there (B, j), with gradients."""


def native_sparse(compile_mode, x: Tensor) -> bool:
    """Whether ``sparse_ops`` should run ``kernels.c`` for a batch x: on CPU when
    ``compile`` (True or "auto") allows and the library builds (see ``fused.kernels_for``;
    ``sparse_ops`` itself checks each call's dtype)."""
    return x.device.type == "cpu" and kernels_for(compile_mode, x.device, float("inf")) == "native"


def pre_activations(x: Tensor, weight: Tensor, bias: Tensor, dense: bool = False,
                    out: Tensor | None = None, use_native: bool = False,
                    center: Tensor | None = None) -> Encoded:
    """Linear encoder whose backward, unless ``dense``, touches only selected latents.

    A penalty on every pre-activation (an L1, a JumpReLU threshold) needs ``dense=True``;
    TopK-style selections need only the rows they pick (see ``sparse_ops``). ``out``
    (B, m) receives the pre-activations in the sparse case (a reused buffer);
    ``use_native``: that sparse backward through ``kernels.c``; ``center``: as
    ``centre`` returns it (sparse encoders only).
    """
    if dense:
        if center is not None:
            raise ValueError("center needs a sparse encoder: centre x with its graph instead")
        pre = torch.addmm(bias, x, weight.T)  # (B, m)
        return Encoded(pre, lambda idx: pre.gather(1, idx))
    with torch.no_grad():
        pre = torch.addmm(bias, x, weight.T, out=out)  # (B, m)
    return Encoded(pre, lambda idx: select_linear(x, weight, bias, idx, pre, use_native, center))


def centre(x: Tensor, b_dec: Tensor, shortcut: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(x - b_dec, center)`` for sparse encoders (``pre_activations``).

    When x needs no gradient (training on data) and ``shortcut``, x - b_dec is computed
    without a graph and b_dec comes back as the center: each encoder then gives b_dec
    its gradient from per-latent sums (m d multiply-adds), not through a (B, d) input
    gradient, its negation and its sum over the batch (~2 ms of a B = 1024 step at
    d = 576). Otherwise (an input gradient is wanted, or a dense encoder): with the
    graph, and no center.
    """
    if shortcut and not x.requires_grad and b_dec.requires_grad:
        with torch.no_grad():
            return x - b_dec, b_dec
    return x - b_dec, None


def topk_select(enc: Encoded, k: int) -> tuple[Tensor, Tensor]:
    """``TopK_k(ReLU(pre))`` as differentiable (values, indices), each (B, k)."""
    indices = torch.topk(enc.pre.detach(), k, dim=-1, sorted=False).indices  # (B, k)
    return F.relu(enc.select(indices)), indices


@torch.no_grad()
def normalize_rows_(weight: Tensor, eps: float = 1e-12) -> None:
    """Rescale the last axis of ``weight`` to unit norm, in place."""
    weight.div_(weight.norm(dim=-1, keepdim=True).clamp_min(eps))


@torch.no_grad()
def tied_init_(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, generator: torch.Generator | None) -> None:
    """Random unit decoder rows drawn from ``generator``, the encoder their transpose
    and a zero encoder bias (Gao et al.'s initialisation); W_enc, W_dec: (m, d)."""
    decoder = torch.randn(W_dec.shape, generator=generator, dtype=W_dec.dtype)
    normalize_rows_(decoder)
    W_dec.copy_(decoder)
    W_enc.copy_(decoder)
    b_enc.zero_()


@torch.no_grad()
def remove_parallel_grad_(weight: Tensor) -> None:
    """Drop the gradient component along each row of ``weight`` (last axis).

    With unit-norm rows re-imposed after every step, the radial part of the gradient
    only fights the renormalisation (sparsify and the H-SAE code both do this).
    """
    if weight.grad is None:
        return
    sq_norm = weight.pow(2).sum(dim=-1, keepdim=True).clamp_min(1e-30)
    parallel = (weight.grad * weight).sum(dim=-1, keepdim=True) / sq_norm
    weight.grad.sub_(parallel * weight)


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """``||x - x_hat||^2`` summed over the batch (a scalar, differentiable in x_hat).

    One fused op each way (``mse_loss``): its forward writes one (B, d) tensor and its
    backward one, where ``(x - x_hat).pow(2).sum()`` and its backward run seven (B, d)
    ops (sub, pow, sum; pow, mul, mul, neg): 10.9 vs 31.6 ms forward and backward for
    two terms at B = 4096, d = 576. A model's main terms go through ``squared_errors``
    (one op for all of them, reused buffers); this one serves AuxK and the tree HSAE's
    per-level terms.
    """
    return F.mse_loss(x_hat, x, reduction="sum")


class _SquaredErrors(torch.autograd.Function):
    """``||x_hat_i - x||^2`` summed over the batch for several reconstructions of one x.

    Each residual ``x_hat_i - x`` is computed once and kept: the backward scales it in
    place into the gradient ``2 g_i (x_hat_i - x)``, so a term runs three (B, d) passes
    where ``mse_loss`` runs four (its elementwise losses, their sum, and a backward that
    rebuilds the difference) and allocates twice. With a ``Workspace`` the residuals
    and squares live in reused buffers: fresh (B, d) tensors page-fault in a training
    step, where the allocator has handed their memory back (in a routed 256x16 step at
    B = 1024 this op took 3.6 ms with fresh tensors, against 0.33 ms for two terms
    alone). Measured for two terms at d = 576, 2 threads, medians of 30, fresh tensors:
    0.33 vs 1.2-1.5 ms forward and backward at B = 1024, 1.5-1.9 vs 4.7-6.4 ms at 4096.
    """

    @staticmethod
    def forward(ctx, x, workspace, *x_hats):
        shape, dtype, device = x.shape, x.dtype, x.device

        def buffer(name):
            return None if workspace is None else workspace.get(name, shape, dtype, device)

        residuals = [torch.sub(h, x, out=buffer(f"residual{i}")) for i, h in enumerate(x_hats)]
        ctx.save_for_backward(*residuals)  # (B, d) each
        # square + sum: the pairwise summation of mse_loss (torch.dot's float32
        # accumulation lost ~1e-5 of a 2.4M-element sum; vector_norm ~1e-4).
        return tuple(torch.mul(r, r, out=buffer("square")).sum() for r in residuals)

    @staticmethod
    def backward(ctx, *grads):
        residuals = ctx.saved_tensors  # a second backward finds them modified and raises
        out = [r.mul_(2 * g) for r, g in zip(residuals, grads)]  # (B, d) each, in place
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = -torch.stack(out).sum(0) if len(out) > 1 else -out[0]
        wanted = ctx.needs_input_grad[2:]
        return (grad_x, None, *(g if need else None for g, need in zip(out, wanted)))


def squared_errors(x: Tensor, *x_hats: Tensor,
                   workspace: Workspace | None = None) -> tuple[Tensor, ...]:
    """``squared_error(x, x_hat)`` of several reconstructions, as one fused op (see
    ``_SquaredErrors``); a tuple of scalars, differentiable in every x_hat and in x.
    ``workspace``: reused buffers for the (B, d) residuals, which the backward turns
    into the gradients, so nobody may keep those gradients past the next call."""
    return _SquaredErrors.apply(x, workspace, *x_hats)


def auxk_loss(
    x: Tensor, x_hat: Tensor, sq_error: Tensor, enc: Encoded, dead: Tensor, k_aux: int,
    decoder: Tensor, allowed: Tensor | None = None, use_native: bool = False,
) -> Tensor:
    """AuxK (Gao et al. 2024, Sec. A.2): dead latents try to explain the residual.

    x, x_hat: (B, d) the input and the main reconstruction, whose residual ``x - x_hat``
    (detached, built only when a latent is dead) and ``sq_error`` = its squared norm
    the term uses; enc: the encoder's pre-activations; dead: (m,) bool; decoder: (m, d);
    allowed: optional (B, m) bool, where each latent may fire at all (Tree SAE: its
    parent is active, paper 3 Eq. 8); elsewhere a dead latent is never picked;
    use_native: the decoder through ``kernels.c``.
    Normalised by ``||residual||^2`` so the term is scale-free, and damped by
    ``min(n_dead / k_aux, 1)`` as in sparsify so a few dead latents do not dominate.
    """
    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux == 0:
        return x.new_zeros(())
    k_eff = min(k_aux, n_dead)
    # Top-k over the dead columns only: masking all m columns cost 2.7 s of a 6.6 s step
    # at m = 34816 with 11 % of the latents dead (B = 4096, 2 CPU threads).
    dead_ids = torch.nonzero(dead).squeeze(1)  # (n_dead,)
    pre_dead = enc.pre.detach().index_select(1, dead_ids)  # (B, n_dead)
    if allowed is not None:
        allowed = allowed.index_select(1, dead_ids)  # (B, n_dead)
        pre_dead = pre_dead.masked_fill(~allowed, float("-inf"))
    local = torch.topk(pre_dead, k_eff, dim=-1, sorted=False).indices  # (B, k_eff)
    indices = dead_ids[local]  # (B, k_eff) latent ids
    values = F.relu(enc.select(indices))
    if allowed is not None:  # rows with fewer than k_eff allowed latents pick some others
        values = values * allowed.gather(1, local)  # (B, k_eff)
    recon = sparse_decode(values, indices, decoder, use_native)  # (B, d)
    denom = sq_error.detach().clamp_min(torch.finfo(x.dtype).tiny)
    scale = min(n_dead / k_aux, 1.0)
    return scale * squared_error(x - x_hat.detach(), recon) / denom


@torch.no_grad()
def update_dead_counter_(counter: Tensor, indices: Tensor, values: Tensor) -> None:
    """Add the batch's tokens to ``counter`` and zero it for every latent that fired.

    counter: (m,) int64 tokens since each latent last fired; indices, values: (B, k).
    """
    counter += indices.shape[0]
    counter[indices[values > 0]] = 0


def bi_orthogonality(encoder: Tensor, decoder: Tensor) -> Tensor:
    """``||M - diag(diag(M))||_F / (m^2 - m)`` with ``M_ij = cos(e_i, d_j)`` (paper 1, Eq. 3.4).

    The reference code subtracts ``diag(M)`` as a vector (broadcast over rows); this is
    the intended form, which zeroes the diagonal. encoder, decoder: (m, d).
    """
    m = encoder.shape[0]
    if m < 2:
        return encoder.new_zeros(())
    cos = F.normalize(encoder, dim=-1) @ F.normalize(decoder, dim=-1).T  # (m, m)
    off = cos - torch.diag_embed(torch.diagonal(cos))
    return off.norm() / (m * m - m)


@torch.no_grad()
def geometric_median(x: Tensor, n_iter: int = 50, tol: float = 1e-6) -> Tensor:
    """Weiszfeld iterations for the geometric median of the rows of x (n, d).

    Robust to the rare huge-norm tokens of LM activations, unlike the mean.
    """
    median = x.mean(dim=0)
    for _ in range(n_iter):
        dist = (x - median).norm(dim=1).clamp_min(1e-8)  # (n,)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        shift = (new - median).norm()
        median = new
        if shift <= tol * median.norm().clamp_min(1.0):
            break
    return median


@torch.no_grad()
def spread_unit_vectors(n: int, dim: int, copies: int, generator, dtype) -> Tensor:
    """``copies`` independent sets of ``n`` unit vectors in R^dim, each spread apart.

    Farthest-point picks from a pool of 16 n random directions per set: the greedy
    choice keeps the largest minimum angle. Returns (copies, n, dim).
    """
    pool = torch.randn(copies, 16 * n, dim, generator=generator, dtype=dtype)
    normalize_rows_(pool)
    chosen = torch.zeros(copies, n, dtype=torch.long)
    nearest = torch.einsum("cpd,cd->cp", pool, pool[:, 0])  # cos to the nearest pick
    for i in range(1, n):
        chosen[:, i] = nearest.argmin(dim=1)
        picked = pool[torch.arange(copies), chosen[:, i]]  # (copies, dim)
        nearest = torch.maximum(nearest, torch.einsum("cpd,cd->cp", pool, picked))
    return torch.gather(pool, 1, chosen[..., None].expand(-1, -1, dim))


def fvu_denominator(x: Tensor) -> Tensor:
    """``sum ||x - mean(x)||^2`` over rows, the denominator of the FVU."""
    return (x - x.mean(dim=0)).pow(2).sum()
