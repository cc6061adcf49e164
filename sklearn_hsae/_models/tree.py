"""The tree HSAE of Luo et al., "From Atoms to Trees" (arXiv 2602.11881).

Every level is a full SAE that reconstructs x on its own; level l has
``n_parents * n_children ** l`` features. A parent index ties each feature of level l+1
to a feature of level l (or to none), and three mechanisms make the levels agree:

- the structural loss ``rho * sum_p ||f_p(x) - sum_{c in C(p)} f_c(x)||^2`` with
  ``f_i(x) = a_i d_i`` the output of feature i (paper 2, Sec. 3);
- random feature perturbation: with probability r a parent's output in its level's
  reconstruction is replaced by its children's sum;
- re-parenting every ``reparent_every`` steps: each child joins the parent whose encoder
  is most cosine-similar; the least similar ``unassigned_fraction`` stay unassigned.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    Codes, Dictionary, LossOutput, auxk_loss, geometric_median, level_l0, native_sparse,
    centre, normalize_rows_, pre_activations, remove_parallel_grad_, sparse_decode, squared_error,
    tied_init_, topk_select, update_dead_counter_,
)
from .jumprelu import count_active, jump_relu
from .workspace import Workspace


class _Level(nn.Module):
    """One SAE of the tree plus its link to the level above."""

    def __init__(self, width, d, parent_width, l0, fixed_bias, kw):
        super().__init__()
        self.W_enc = nn.Parameter(torch.empty(width, d, **kw))
        self.b_enc = nn.Parameter(torch.empty(width, **kw))
        self.W_dec = nn.Parameter(torch.empty(width, d, **kw))  # unit rows
        self.b_dec = nn.Parameter(torch.empty(d, **kw), requires_grad=not fixed_bias)
        if l0:
            self.log_threshold = nn.Parameter(torch.empty(width, **kw))
        dev = kw["device"]
        self.register_buffer("parent_index", torch.full((width,), -1, dtype=torch.long, device=dev))
        self.register_buffer("has_children", torch.zeros(width, dtype=torch.bool, device=dev))
        self.register_buffer("tokens_since_fired", torch.zeros(width, dtype=torch.long, device=dev))
        self.register_buffer("l0_coef", torch.ones((), **kw))
        self.register_buffer("l0_ema", torch.full((), -1.0, **kw))  # -1: not measured yet
        self.parent_width = parent_width


def _structural_loss(parent: tuple, child: tuple, has_children: Tensor, parent_of: Tensor) -> Tensor:
    """``sum_b sum_p ||a_p d_p - S_p||^2`` over parents with children, S_p = sum of children.

    Expanded as ``a_p^2 ||d_p||^2 - 2 a_p d_p.S_p + ||S_p||^2`` and written with decoder
    dot products only, so no (B, k, d) gather is built:

    - ``d_p.S_p = sum_c v_c (d_p.d_c)``, where ``d_parent(c).d_c`` is one number per
      child, computed once per step for the whole level (n_children dot products);
    - ``||S_p||^2 = sum_c v_c^2 ||d_c||^2 + 2 sum_{c < c'} v_c v_c' d_c.d_c'`` over the
      siblings active in the same row, found with a (B, k, k) mask (few pairs).

    parent, child: (values (B, k), indices (B, k), decoder (n, d)).
    """
    vp, ip, Dp = parent
    vc, ic, Dc = child
    term_parent = (vp.pow(2) * Dp.pow(2).sum(dim=1)[ip] * has_children[ip]).sum()

    pc = parent_of[ic]  # (B, kc) parent of each active child, -1 = none
    live = (vc != 0) & (pc >= 0)
    vc = vc * live
    # Each child's dot with its own parent's decoder row (unassigned children: 0).
    own = parent_of >= 0
    parent_dot = (Dc * Dp[parent_of.clamp_min(0)]).sum(dim=1) * own  # (n_children,)
    # The value of child c's parent in the same row (0 when that parent is silent).
    same = pc[:, :, None] == ip[:, None, :]  # (B, kc, kp)
    a_parent = (same * vp[:, None, :]).sum(dim=2)  # (B, kc)
    term_cross = (a_parent * vc * parent_dot[ic]).sum()

    term_children = (vc.pow(2) * Dc.pow(2).sum(dim=1)[ic]).sum()
    siblings = (pc[:, :, None] == pc[:, None, :]) & live[:, :, None] & live[:, None, :]
    b, i, j = torch.nonzero(torch.triu(siblings, diagonal=1), as_tuple=True)
    if b.numel():
        dots = (Dc[ic[b, i]] * Dc[ic[b, j]]).sum(dim=1)
        term_children = term_children + 2 * (vc[b, i] * vc[b, j] * dots).sum()
    return term_parent - 2 * term_cross + term_children


class TreeSAE(nn.Module):
    """Parameters and forward pass of the tree HSAE; no training logic."""

    cumulative: ClassVar[bool] = False  # every level reconstructs x on its own
    compile_mode: bool | str = False  # the estimator's ``compile`` (see ``native_sparse``)

    def __init__(self, config, *, device=None, dtype=torch.float32):
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        widths = config.widths
        l0 = config.sparsity == "l0"
        self.levels = nn.ModuleList(
            _Level(w, config.n_features, widths[i - 1] if i else 0, l0, config.fixed_decoder_bias, kw)
            for i, w in enumerate(widths)
        )
        self.register_buffer("loss_scale", torch.ones((), **kw))
        self.workspace = Workspace()  # reused CPU buffers, not part of the state
        self.register_buffer("step", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("seed", torch.zeros((), dtype=torch.long, device=device))

    def integer_ranges(self) -> dict[str, tuple[int, int | None]]:
        """Valid ``[low, high)`` of every integer tensor of ``state_dict()`` (None: no bound)."""
        ranges = {"step": (0, None), "seed": (0, 2**31)}
        for i, level in enumerate(self.levels):
            ranges[f"levels.{i}.tokens_since_fired"] = (0, None)
            ranges[f"levels.{i}.has_children"] = (0, 2)
            ranges[f"levels.{i}.parent_index"] = (-1, level.parent_width)
        return ranges

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for level in self.levels:
            tied_init_(level.W_enc, level.b_enc, level.W_dec, generator)
            level.b_dec.zero_()
            level.tokens_since_fired.zero_()
            level.l0_coef.fill_(1e-3)
            level.l0_ema.fill_(-1.0)
            if hasattr(level, "log_threshold"):
                level.log_threshold.zero_()
        self.seed.fill_(int(torch.randint(2**31 - 1, (), generator=generator)))
        self.step.zero_()
        self.loss_scale.fill_(1.0)
        self.reparent()

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Biases from the data; JumpReLU thresholds so that each level starts at L0 ~ k."""
        var = (x - x.mean(0)).pow(2).sum(1).mean()
        for level in self.levels:
            if not self.config.fixed_decoder_bias:
                level.b_dec.copy_(geometric_median(x))
            if hasattr(level, "log_threshold"):
                act = F.relu((x - level.b_dec) @ level.W_enc.T + level.b_enc).reshape(-1)
                n_keep = min(act.numel(), self.config.k * x.shape[0])
                cut = torch.topk(act, n_keep).values[-1].clamp_min(1e-6)
                level.log_threshold.fill_(float(cut.log()))
        if var <= 0:
            var = (x - self.levels[0].b_dec).pow(2).sum(1).mean()
        self.loss_scale.fill_(float(var) if var > 0 else 1.0)

    @torch.no_grad()
    def reparent(self) -> None:
        """Each child joins its most encoder-similar parent; the least similar
        ``unassigned_fraction`` of children stay unassigned (-1)."""
        for upper, lower in zip(self.levels[:-1], self.levels[1:]):
            parents = F.normalize(upper.W_enc, dim=1)
            best = torch.empty(lower.W_enc.shape[0], dtype=parents.dtype, device=parents.device)
            arg = torch.empty(lower.W_enc.shape[0], dtype=torch.long, device=parents.device)
            for start in range(0, len(best), 4096):  # (4096, n_parents) blocks of cosines
                block = F.normalize(lower.W_enc[start : start + 4096], dim=1) @ parents.T
                best[start : start + 4096], arg[start : start + 4096] = block.max(dim=1)
            n_out = int(self.config.unassigned_fraction * len(best))
            if n_out > 0:
                arg[torch.argsort(best, stable=True)[:n_out]] = -1
            lower.parent_index.copy_(arg)
            upper.has_children.zero_()
            upper.has_children[arg[arg >= 0]] = True

    # ---------------------------------------------------------------- forward
    def _encode_level(self, level: _Level, x: Tensor, use_native: bool):
        # JumpReLU's thresholds learn from every pre-activation: dense encoder there.
        dense = self.config.sparsity == "l0"
        pre = self.workspace.get(f"pre{id(level)}", (x.shape[0], level.W_enc.shape[0]), x.dtype, x.device)
        xc, center = centre(x, level.b_dec, shortcut=not dense)  # (B, d)
        enc = pre_activations(xc, level.W_enc, level.b_enc, dense=dense,
                              out=None if dense else pre, use_native=use_native, center=center)
        if self.config.sparsity == "topk":
            values, indices = topk_select(enc, self.config.k)  # (B, k)
            return enc, values, indices, None
        pre = enc.pre
        threshold = level.log_threshold.exp()
        act = jump_relu(pre, threshold, self.config.jump_bandwidth)  # (B, n), STE to theta
        width = max(1, int((act > 0).sum(dim=1).max()))
        values, indices = torch.topk(act, min(width, act.shape[1]), dim=1, sorted=False)
        counts = count_active(pre, threshold, self.config.jump_bandwidth)  # (B,) L0 with STE
        return enc, values, indices, counts

    def forward(self, x: Tensor) -> Codes:
        values, indices, x_hats = [], [], []
        use_native = native_sparse(self.compile_mode, x)
        for level in self.levels:
            _, v, i, _ = self._encode_level(level, x, use_native)
            values.append(v)
            indices.append(i)
            x_hats.append(sparse_decode(v, i, level.W_dec, use_native) + level.b_dec)
        return Codes(values, indices, x_hats[-1], x_hats)

    def _perturbation(self, level_index: int) -> Tensor | None:
        """Parents (of this level) whose output is swapped for their children's this step."""
        cfg = self.config
        if cfg.perturb_rate <= 0 or level_index == len(self.levels) - 1:
            return None
        # Counter-based draws: reproducible, and resumable from (seed, step) alone.
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.step) * 97 + level_index)
        level = self.levels[level_index]
        draw = torch.rand(level.W_dec.shape[0], generator=gen).to(level.has_children.device)
        swap = (draw < cfg.perturb_rate) & level.has_children
        return swap if bool(swap.any()) else None

    # ------------------------------------------------------------------- loss
    def loss(self, x: Tensor) -> LossOutput:
        cfg = self.config
        B = x.shape[0]
        norm = B * self.loss_scale
        use_native = native_sparse(self.compile_mode, x)
        encoded = [self._encode_level(level, x, use_native) for level in self.levels]
        total = x.new_zeros(())
        terms = {}
        for li, (level, (enc, v, i, counts)) in enumerate(zip(self.levels, encoded)):
            x_hat = sparse_decode(v, i, level.W_dec, use_native) + level.b_dec
            sq_error = squared_error(x, x_hat)
            swap = self._perturbation(li)
            if swap is not None:  # parent outputs replaced by their children's sum
                below = self.levels[li + 1]
                _, vc, ic, _ = encoded[li + 1]
                pc = below.parent_index[ic]
                moved = (pc >= 0) & swap[pc.clamp_min(0)]
                x_pert = (sparse_decode(v * ~swap[i], i, level.W_dec, use_native)
                          + sparse_decode(vc * moved, ic, below.W_dec, use_native) + level.b_dec)
                recon = squared_error(x, x_pert) / norm
            else:
                recon = sq_error / norm
            total = total + recon
            terms[f"recon{li}"] = recon
            update_dead_counter_(level.tokens_since_fired, i, v)
            if cfg.aux_coef > 0:
                dead = level.tokens_since_fired > cfg.dead_tokens
                aux = auxk_loss(x, x_hat, sq_error, enc, dead, cfg.aux_k, level.W_dec, use_native=use_native)
                total = total + cfg.aux_coef * aux
                terms[f"auxk{li}"] = aux
            if counts is not None:
                l0 = counts.mean()
                total = total + float(level.l0_coef) * l0
                terms[f"l0_{li}"] = l0
                self._steer_l0(level, l0.detach())
            if li + 1 < len(self.levels) and cfg.rho > 0:
                below = self.levels[li + 1]
                _, vc, ic, _ = encoded[li + 1]
                pcl = _structural_loss((v, i, level.W_dec), (vc, ic, below.W_dec),
                                       level.has_children, below.parent_index) / norm
                total = total + cfg.rho * pcl
                terms[f"structure{li}"] = pcl
        l0 = level_l0([v for _, v, _, _ in encoded])
        # sq_error is the finest level's: the model's reconstruction is the finest level.
        return LossOutput(total, sq_error.detach(), l0, {k: t.detach() for k, t in terms.items()})

    @torch.no_grad()
    def _steer_l0(self, level: _Level, l0: Tensor) -> None:
        """Paper 2's controller: follow ``dL0/dstep = -eta (L0 - k)`` on an EMA of L0;
        lower the L0 coefficient when L0 falls faster than that, raise it otherwise."""
        cfg = self.config
        if level.l0_ema < 0:
            level.l0_ema.copy_(l0)
            return
        previous = level.l0_ema.clone()
        level.l0_ema.mul_(cfg.l0_ema).add_((1 - cfg.l0_ema) * l0)
        wanted = -cfg.l0_eta * (previous - cfg.k)
        factor = 1 - cfg.l0_gain if (level.l0_ema - previous) < wanted else 1 + cfg.l0_gain
        level.l0_coef.mul_(factor)

    # ---------------------------------------------------------- constraints
    def before_optimizer_step(self) -> None:
        for level in self.levels:
            remove_parallel_grad_(level.W_dec)

    def after_optimizer_step(self) -> None:
        for level in self.levels:
            normalize_rows_(level.W_dec)
        self.step += 1
        if int(self.step) % self.config.reparent_every == 0:
            self.reparent()

    def clip_groups(self) -> list:
        """Each level's gradient is clipped on its own, so with ``rho = 0`` and
        ``perturb_rate = 0`` the levels train exactly as independent SAEs would."""
        return [list(level.parameters()) for level in self.levels]

    def lr_groups(self) -> list:
        """Each level takes the learning rate of its own width (``TreeConfig.lr_widths``)."""
        return [list(level.parameters()) for level in self.levels]

    def on_fit_end(self) -> None:
        """The exported tree always matches the final encoders."""
        self.reparent()

    @torch.no_grad()
    def dictionary(self, out: list[Tensor] | None = None) -> Dictionary:
        components = [level.W_dec.detach() for level in self.levels]
        if out is not None:
            for target, source in zip(out, components):
                target.copy_(source)
            components = list(out)
        return Dictionary(components, [level.parent_index for level in self.levels],
                          [level.b_dec.detach() for level in self.levels])
