"""Tree SAE of Cao et al., "Tree SAE: Learning Hierarchical Feature Structures in Sparse
Autoencoders" (paper 3, arXiv 2605.07922).

One TopK dictionary in L nested levels ("privilege layers"); level l has
``n_parents * n_children ** l`` features. Every feature of level l >= 1 has one parent
in level l - 1 or the always-active root (parent index -1); level 0 hangs from the root.

- **Activation coverage** (paper 3, Eq. 6): levels are encoded in order and level l
  takes its top-k only among the features whose parent fired in that row, so a
  feature fires only where its parent does: ``P(parent | child) = 1`` by construction.
- **Reconstruction condition** (Eq. 7): the levels add up, and every prefix
  ``x_hat_l = b_dec + sum_{t <= l} D_t z_t`` must reconstruct x on its own: the loss
  sums the per-prefix errors, as a Matryoshka SAE does.
- **Per-level AuxK** (Eq. 8): the dead features of level l, allowed only where their
  parent fires, reconstruct the residual ``x - x_hat_l``.
- **Dynamic allocation** (Algorithms 1-2): a capacity per candidate parent grows with
  the loss; on a growing interval dead children move to the parents whose capacity per
  child is largest (among parents that fired recently); at the root reset step every
  dead child joins the root and the tree stays as it is.

Nothing here draws random numbers after ``reset_parameters``: selection, allocation
and its ties are deterministic, so a resumed fit repeats an uninterrupted one.

Where paper 3 and its code (``tue147/tree-sae``, read for ``shared/PAPERS.md`` §4)
disagree, and what this module does:

- Capacity: the paper adds the loss once per token a parent fires on; the code that
  trained the released SAEs splits each step's loss equally among the parents that
  fired at least once in the batch (the root always counts). We follow the code.
- The research code checked the reallocation schedule inside the per-layer loop, so
  deeper layers got a step's loss after their reset; the released code accumulates all
  layers first, as we do.
- AuxK: Eq. 8 is per layer; the released runs use it on the first layer only. We use
  every level. The code's AuxK reconstruction includes ``b_dec``; ours does not (Gao et
  al.), so the term is zero while no feature is dead.

Where we depart from both: a parent is a feature of the level directly above (the
paper and code allow any earlier layer), so the tree is the package's per-level parent
index; one ``k`` for every level (the paper tunes ``k_l`` per layer, e.g. 21/5/4/2);
the initial tree is balanced (feature i of level l under parent ``i // n_children``;
the code draws parents uniformly, root included); the schedule keeps the code's
fractions of a run (first reallocation at 3 %, largest interval 10 %, root reset at
51 % of the steps) instead of its step counts; a feature fires when its code is > 0
(the code: > 1e-3); the encoder has a bias (the code's has none).
"""

from __future__ import annotations

import heapq
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    Codes,
    Dictionary,
    Encoded,
    LossOutput,
    auxk_loss,
    centre,
    squared_errors,
    SAEBase,
    level_l0,
    native_sparse,
    normalize_rows_,
    pre_activations,
    remove_parallel_grad_,
    sparse_decode,
    tied_init_,
    topk_select,
    update_dead_counter_,
)
from .workspace import Workspace


def root_slots(parent_index: Tensor, n_parents: int) -> Tensor:
    """Parent slot of every feature, with the root (-1) as slot ``n_parents``."""
    return torch.where(parent_index >= 0, parent_index, n_parents)


def children_allowed(active: Tensor, parent_index: Tensor) -> Tensor:
    """(B, w) whether each feature's parent fired in the row; the root always has.

    active: (B, n) bool activity of the level above; parent_index: (w,) in [-1, n).
    """
    with_root = torch.cat([active, active.new_ones(active.shape[0], 1)], dim=1)  # (B, n + 1)
    return with_root[:, root_slots(parent_index, active.shape[1])]  # (B, w)


def masked_topk(enc: Encoded, allowed: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``TopK_k(ReLU(pre))`` over the allowed entries of every row (paper 3, Eq. 6).

    A row with fewer than k allowed features fills its other slots with code 0.
    """
    pre = enc.pre.detach().masked_fill(~allowed, float("-inf"))  # (B, w)
    indices = torch.topk(pre, k, dim=-1, sorted=False).indices  # (B, k)
    return F.relu(enc.select(indices)) * allowed.gather(1, indices), indices  # (B, k) each


def greedy_quotas(capacity: Tensor, n_children: int, eligible: Tensor) -> Tensor:
    """Algorithm 1 of paper 3: children per candidate parent maximising ``min_p C_p / k_p``.

    The children are handed out one at a time, each to the parent whose capacity per
    child stays largest after it, ``C_p / (k_p + 1)`` (D'Hondt's rule, optimal by the
    paper's Theorem 4.1); ties go to the lower slot. Parents that are not eligible or
    have no capacity get none; when no eligible parent has capacity, the children are
    spread evenly over the eligible ones, lower slots first.

    capacity: (n,) float; eligible: (n,) bool -> (n,) int64 quotas summing to
    ``n_children`` whenever a parent is eligible.
    """
    caps = capacity.detach().double().cpu().tolist()
    allowed = [p for p, ok in enumerate(eligible.cpu().tolist()) if ok]
    quotas = [0] * len(caps)
    heap = [(-caps[p], p) for p in allowed if caps[p] > 0]  # (-C_p / (k_p + 1), p), k_p = 0
    if heap:
        heapq.heapify(heap)
        for _ in range(n_children):
            p = heap[0][1]
            quotas[p] += 1
            heapq.heapreplace(heap, (-caps[p] / (quotas[p] + 1), p))
    elif allowed:
        base, extra = divmod(n_children, len(allowed))
        for rank, p in enumerate(allowed):
            quotas[p] = base + (rank < extra)
    return torch.tensor(quotas, dtype=torch.long, device=capacity.device)


def move_dead_children(slots: Tensor, dead: Tensor, quotas: Tensor) -> Tensor:
    """Algorithm 2's moves as paper 3's code makes them: only dead children move.

    A parent holding ``c_p > q_p`` children offers up to ``c_p - q_p`` of its dead ones,
    lowest ids first, parents in slot order; parents below their quota take
    ``q_p - c_p`` places each, in slot order; the first ``min(offers, places)`` offers
    fill the first places. slots: (w,) parent slot per child; dead: (w,) bool;
    quotas: (n_slots,). Returns the new slots.
    """
    counts = torch.bincount(slots, minlength=len(quotas))  # (n_slots,)
    surplus = (counts - quotas).clamp_min(0)
    deficit = (quotas - counts).clamp_min(0)
    dead_ids = torch.nonzero(dead).squeeze(1)  # (n_dead,) ascending
    dead_ids = dead_ids[torch.argsort(slots[dead_ids], stable=True)]  # grouped by slot
    slot = slots[dead_ids]  # (n_dead,) sorted
    # Rank of each dead child among its parent's: position minus where its group starts.
    rank = torch.arange(len(slot), device=slot.device) - torch.searchsorted(slot, slot)
    offers = dead_ids[rank < surplus[slot]]
    places = torch.repeat_interleave(torch.arange(len(quotas), device=slot.device), deficit)
    n_moves = min(len(offers), len(places))
    moved = slots.clone()
    moved[offers[:n_moves]] = places[:n_moves]
    return moved


class _Level(nn.Module):
    """One privilege layer: its slice of the dictionary and its link to the level above."""

    def __init__(self, width, d, parent_width, kw):
        super().__init__()
        self.W_enc = nn.Parameter(torch.empty(width, d, **kw))
        self.b_enc = nn.Parameter(torch.empty(width, **kw))
        self.W_dec = nn.Parameter(torch.empty(width, d, **kw))  # unit rows
        dev = kw["device"]
        self.register_buffer("parent_index", torch.full((width,), -1, dtype=torch.long, device=dev))
        self.register_buffer("tokens_since_fired", torch.zeros(width, dtype=torch.long, device=dev))
        if parent_width:  # C_p of every feature above, then the root's
            self.register_buffer("capacity", torch.zeros(parent_width + 1, **kw))
        self.parent_width = parent_width


class NestedSAE(SAEBase):
    """Parameters, forward pass and tree allocation of the Tree SAE; no training loop."""

    cumulative: ClassVar[bool] = True  # level l reconstructs with levels 0..l (Eq. 7)

    def __init__(self, config, *, device=None, dtype=torch.float32):
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        widths, d = config.widths, config.n_features
        self.levels = nn.ModuleList(
            _Level(w, d, widths[i - 1] if i else 0, kw) for i, w in enumerate(widths)
        )
        self.b_dec = nn.Parameter(torch.empty(d, **kw), requires_grad=not config.fixed_decoder_bias)
        self.register_buffer("loss_scale", torch.ones((), **kw))
        for name in ("step", "next_realloc", "realloc_interval"):  # the allocation schedule
            self.register_buffer(name, torch.zeros((), dtype=torch.long, device=device))
        self.workspace = Workspace()  # reused CPU buffers, not part of the state
        self._step_loss = None  # the last loss(), for the capacities of the step it makes

    def integer_ranges(self) -> dict[str, tuple[int, int | None]]:
        """Valid ``[low, high)`` of every integer tensor of ``state_dict()`` (None: no bound)."""
        ranges = {"step": (0, None), "next_realloc": (0, None), "realloc_interval": (0, None)}
        for i, level in enumerate(self.levels):
            ranges[f"levels.{i}.tokens_since_fired"] = (0, None)
            ranges[f"levels.{i}.parent_index"] = (-1, level.parent_width)
        return ranges

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for level in self.levels:
            tied_init_(level.W_enc, level.b_enc, level.W_dec, generator)
            level.tokens_since_fired.zero_()
            if level.parent_width:  # balanced start: n_children children per parent
                width = level.parent_index.shape[0]
                ids = torch.arange(width, device=level.parent_index.device)
                level.parent_index.copy_(ids // (width // level.parent_width))
                level.capacity.zero_()
        self.b_dec.zero_()
        self.loss_scale.fill_(1.0)
        self.step.zero_()
        self.next_realloc.fill_(self.config.realloc_first)
        self.realloc_interval.fill_(self.config.realloc_first)


    # ---------------------------------------------------------------- forward
    def _encode(self, x: Tensor,
                use_native: bool) -> list[tuple[Encoded, Tensor, Tensor, Tensor | None]]:
        """Per level (pre-activations, values (B, k), indices (B, k), allowed (B, w) or
        None for level 0), level after level: each needs the activity of the one above."""
        xc, center = centre(x, self.b_dec)  # (B, d)
        out, active = [], None
        for li, level in enumerate(self.levels):
            shape = (x.shape[0], level.W_enc.shape[0])
            pre = self.workspace.get(f"pre{li}", shape, x.dtype, x.device)
            enc = pre_activations(xc, level.W_enc, level.b_enc, use_native=use_native,
                                  center=center, out=pre)
            if active is None:
                allowed = None
                values, indices = topk_select(enc, self.config.k)  # (B, k)
            else:
                allowed = children_allowed(active, level.parent_index)  # (B, w)
                values, indices = masked_topk(enc, allowed, self.config.k)  # (B, k)
            active = torch.zeros(shape, dtype=torch.bool, device=x.device)
            active.scatter_(1, indices, values.detach() > 0)  # (B, w)
            out.append((enc, values, indices, allowed))
        return out

    def _prefixes(self, encoded, use_native: bool) -> list[Tensor]:
        """Cumulative reconstructions ``b_dec + sum_{t <= l} D_t z_t``, each (B, d)."""
        x_hats = []
        for level, (_, values, indices, _) in zip(self.levels, encoded):
            part = sparse_decode(values, indices, level.W_dec, use_native)  # (B, d)
            x_hats.append(part + (x_hats[-1] if x_hats else self.b_dec))
        return x_hats

    def forward(self, x: Tensor) -> Codes:
        use_native = native_sparse(self.compile_mode, x)
        encoded = self._encode(x, use_native)
        x_hats = self._prefixes(encoded, use_native)
        return Codes([e[1] for e in encoded], [e[2] for e in encoded], x_hats[-1], x_hats)

    # ------------------------------------------------------------------- loss
    def loss(self, x: Tensor) -> LossOutput:
        cfg = self.config
        norm = x.shape[0] * self.loss_scale
        use_native = native_sparse(self.compile_mode, x)
        encoded = self._encode(x, use_native)
        total, terms = x.new_zeros(()), {}
        x_hats = self._prefixes(encoded, use_native)
        sq_errors = squared_errors(x, *x_hats, workspace=self.workspace)
        for li, (level, (enc, v, i, allowed), x_hat, sq_error) in enumerate(
                zip(self.levels, encoded, x_hats, sq_errors)):
            terms[f"recon{li}"] = sq_error / norm  # Eq. 7: every prefix reconstructs x
            total = total + terms[f"recon{li}"]
            update_dead_counter_(level.tokens_since_fired, i, v)
            if cfg.aux_coef > 0:  # Eq. 8: dead features where their parent fires
                dead = level.tokens_since_fired > cfg.dead_tokens
                aux = auxk_loss(x, x_hat, sq_error, enc, dead, cfg.aux_k[li], level.W_dec, allowed,
                                use_native)
                total = total + cfg.aux_coef * aux
                terms[f"auxk{li}"] = aux
        self._step_loss = total.detach()
        # sq_error is the finest prefix's: the model's reconstruction uses every level.
        return LossOutput(total, sq_error.detach(), level_l0([e[1] for e in encoded]),
                          {k: t.detach() for k, t in terms.items()})

    # ------------------------------------------------------------- allocation
    @torch.no_grad()
    def _accumulate_capacity(self) -> None:
        """Capacity as paper 3's code grows it: the step's loss split equally among the
        candidate parents that fired in the batch, the root always counting."""
        loss, self._step_loss = self._step_loss, None
        if loss is None:
            return
        for upper, level in zip(self.levels[:-1], self.levels[1:]):
            fired = upper.tokens_since_fired == 0  # (n,) update_dead_counter_ zeroed them
            fired = torch.cat([fired, fired.new_ones(1)]).to(level.capacity.dtype)  # (n + 1,)
            level.capacity.add_(fired * (loss / fired.sum()))

    @torch.no_grad()
    def reallocate(self) -> None:
        """Algorithm 2: quotas from the capacities (Algorithm 1), then dead children move
        towards them; capacities start again from zero."""
        cfg = self.config
        for upper, level in zip(self.levels[:-1], self.levels[1:]):
            n = level.parent_width
            recent = upper.tokens_since_fired < cfg.eligible_tokens  # (n,)
            eligible = torch.cat([recent, recent.new_ones(1)])  # (n + 1,) the root always
            slots = root_slots(level.parent_index, n)
            quotas = greedy_quotas(level.capacity, len(slots), eligible)
            slots = move_dead_children(slots, level.tokens_since_fired > cfg.dead_tokens, quotas)
            level.parent_index.copy_(torch.where(slots == n, -1, slots))
            level.capacity.zero_()

    @torch.no_grad()
    def attach_dead_to_root(self) -> None:
        """The root reset: every dead child becomes a child of the always-active root."""
        for level in self.levels[1:]:
            level.parent_index.masked_fill_(level.tokens_since_fired > self.config.dead_tokens, -1)

    @torch.no_grad()
    def _advance_schedule(self) -> None:
        """Reallocate at ``next_realloc`` (the interval grows by ``realloc_growth`` up to
        ``realloc_max``) until the root reset, after which the tree is fixed."""
        cfg = self.config
        self.step += 1
        step = int(self.step)
        if step == cfg.root_reset_step:
            self.attach_dead_to_root()
        elif step < cfg.root_reset_step and step >= int(self.next_realloc):
            self.reallocate()
            interval = min(cfg.realloc_max, int(int(self.realloc_interval) * cfg.realloc_growth))
            self.realloc_interval.fill_(interval)
            self.next_realloc.fill_(step + interval)

    # ---------------------------------------------------------- constraints
    def before_optimizer_step(self) -> None:
        for level in self.levels:
            remove_parallel_grad_(level.W_dec)

    def after_optimizer_step(self) -> None:
        for level in self.levels:
            normalize_rows_(level.W_dec)
        self._accumulate_capacity()
        self._advance_schedule()

    def clip_groups(self) -> list:
        return [list(self.parameters())]  # one dictionary: one clip

    def lr_groups(self) -> list:
        """Each level takes the learning rate of its own width (``NestedConfig.lr_widths``);
        the shared decoder bias, last in ``parameters()``, goes with the last level."""
        groups = [list(level.parameters()) for level in self.levels]
        groups[-1].append(self.b_dec)
        return groups

    def on_fit_end(self) -> None:
        pass  # the tree is the live parent index; nothing to bring up to date

    @torch.no_grad()
    def dictionary(self, out: list[Tensor] | None = None) -> Dictionary:
        components = [level.W_dec.detach() for level in self.levels]
        if out is not None:
            for target, source in zip(out, components):
                target.copy_(source)
            components = list(out)
        return Dictionary(components, [level.parent_index for level in self.levels],
                          [self.b_dec.detach()] * len(self.levels))
