"""Group (sample, expert) pairs by expert so each expert's small matrices are read once.

The routed H-SAE needs, for every active (sample b, parent p) pair, a few tiny matmuls
with parent p's own matrices (s x d, C x s, ...). Gathering those matrices per pair
costs k * s * d floats per sample; multiplying every sample by every expert is dense in
n_parents * s. Instead we sort the pairs by expert and cut each expert's run into tiles
of ``T`` pairs, so one ``bmm`` over tiles does the work and each expert's matrix is
gathered once per tile, not once per pair. Padding slots point at a sentinel row of
zeros and are masked out. Eagerly, sums over a row's pairs use ``embedding_bag`` over
the (B, k) slot layout (a gather-sum, no scatter), and weight gradients are per-tile
``bmm``; a route built with ``kernels="native"`` (CPU) hands the same layout to
``native.py``'s C loops instead, which read rows in place (see ``fused.kernels_for``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fused, native
from .workspace import Workspace


class Tiling(NamedTuple):
    """Pairs laid out as (n_tiles, T) tiles that each belong to a single expert."""

    pair: Tensor
    """(n_tiles, T) index of the pair in each slot; ``n_pairs`` marks padding."""
    expert: Tensor
    """(n_tiles,) the expert that owns each tile."""
    valid: Tensor
    """(n_tiles, T) bool, False on padding slots."""
    tile_of_pair: Tensor
    """(n_pairs,) tile holding each pair."""
    slot_of_pair: Tensor
    """(n_pairs,) position of each pair inside its tile."""
    start: Tensor
    """(n_experts + 1,) the tiles of expert e are ``start[e]`` to ``start[e + 1] - 1``."""


def tile_size_for(n_pairs: int, n_experts: int) -> int:
    """The largest power of two not above the mean pairs per busy expert, in [1, 64].

    Measured at B = 4096, k = 32, 2048 experts (mean 64 pairs): tiles of 64 gave the
    fastest step; 32, 16 and 8 were 13 %, 30 % and 56 % slower (small bmm batches cost
    more than the extra padding).
    """
    mean = n_pairs / max(1, min(n_experts, n_pairs))
    size = 1
    while size * 2 <= mean and size < 64:
        size *= 2
    return size


def make_tiling(expert_of_pair: Tensor, n_experts: int, tile: int) -> Tiling:
    """Sort pairs by expert and cut each expert's run into tiles of ``tile`` slots.

    expert_of_pair: (n_pairs,) int64. One host synchronisation (the tile count). With no
    pair at all the layout is a single padding tile, so slot gathers stay in range.
    """
    n_pairs = expert_of_pair.shape[0]
    device = expert_of_pair.device
    order = torch.argsort(expert_of_pair, stable=True)  # (n_pairs,)
    sorted_expert = expert_of_pair[order]
    counts = torch.bincount(sorted_expert, minlength=n_experts)  # (E,)
    tiles_per_expert = (counts + tile - 1) // tile  # (E,)
    first_tile = torch.cumsum(tiles_per_expert, 0) - tiles_per_expert  # (E,)
    first_pos = torch.cumsum(counts, 0) - counts  # (E,)
    pos_in_run = torch.arange(n_pairs, device=device) - first_pos[sorted_expert]
    tile_sorted = first_tile[sorted_expert] + pos_in_run // tile  # (n_pairs,)
    slot_sorted = pos_in_run % tile  # (n_pairs,)
    n_tiles = int(tiles_per_expert.sum())
    if n_tiles == 0:  # no pair at all: one padding tile keeps every gather in range
        tiles_per_expert = torch.zeros_like(tiles_per_expert)
        tiles_per_expert[0] = 1
        n_tiles = 1
    start = F.pad(torch.cumsum(tiles_per_expert, 0), (1, 0))  # (E + 1,)
    pair = torch.full((n_tiles, tile), n_pairs, dtype=torch.long, device=device)
    pair[tile_sorted, slot_sorted] = order
    expert = torch.repeat_interleave(
        torch.arange(n_experts, device=device), tiles_per_expert, output_size=n_tiles
    )  # (n_tiles,)
    tile_of_pair = torch.empty_like(tile_sorted)
    slot_of_pair = torch.empty_like(slot_sorted)
    tile_of_pair[order] = tile_sorted
    slot_of_pair[order] = slot_sorted
    return Tiling(pair, expert, pair < n_pairs, tile_of_pair, slot_of_pair, start)


class Route(NamedTuple):
    """Where each active (row, expert) slot of a (B, k) TopK code sits in the tiles."""

    tiling: Tiling
    workspace: Workspace
    """Reused buffers for the (n_tiles, T, d) gathers."""
    rows: Tensor
    """(n_tiles * T,) row of the pair in every tile slot; B on padding."""
    slot_pos: Tensor
    """(B, k) flat tile position (tile * T + slot) of every slot; 0 where inactive."""
    slot_active: Tensor
    """(B, k) bool, the slot holds a pair (its TopK value is positive)."""
    slot_expert: Tensor
    """(B, k) expert of every slot."""
    kernels: str = "eager"
    """"eager" (torch ops over (n_tiles, T, d) copies of rows), "native" (``native.py``'s
    C kernels) or "inductor" (``fused.py``'s compiled ones): see ``fused.kernels_for``."""


def make_route(values: Tensor, indices: Tensor, n_experts: int, workspace: Workspace,
               kernels: str = "eager") -> Route:
    """Tile the active slots of TopK codes values, indices (B, k) by expert; ``kernels``
    picks the child path's kernels (see ``Route.kernels``)."""
    B, k = values.shape
    active = values > 0
    if kernels == "native":
        return _native_route(active, indices, n_experts, workspace)
    flat_slot = torch.nonzero(active.reshape(-1)).squeeze(1)  # (N,)
    expert = indices.reshape(-1)[flat_slot]
    tiling = make_tiling(expert, n_experts, tile_size_for(len(expert), n_experts))
    T = tiling.pair.shape[1]
    pair_pos = tiling.tile_of_pair * T + tiling.slot_of_pair  # (N,)
    slot_pos = torch.zeros(B * k, dtype=torch.long, device=values.device)
    slot_pos[flat_slot] = pair_pos
    rows = torch.full((tiling.pair.numel(),), B, dtype=torch.long, device=values.device)
    rows[pair_pos] = torch.div(flat_slot, k, rounding_mode="floor")
    return Route(tiling, workspace, rows, slot_pos.view(B, k), active, indices, kernels)


def _native_route(active: Tensor, indices: Tensor, n_experts: int, workspace: Workspace) -> Route:
    """``make_route``'s layout, bit for bit, by a counting sort in ``kernels.c`` (the sort,
    scatters and index arithmetic of the torch version cost ~0.02 s at B = 4096, k = 32)."""
    B, k = active.shape
    counts, n_pairs = native.route_counts(active, indices, n_experts)  # (E,)
    T = tile_size_for(n_pairs, n_experts)
    tiles_per_expert = (counts + T - 1) // T  # (E,)
    if n_pairs == 0:  # one padding tile keeps every gather in range
        tiles_per_expert[0] = 1
    start = F.pad(torch.cumsum(tiles_per_expert, 0), (1, 0))  # (E + 1,)
    rows, pair, slot_pos, pair_pos, expert = native.route_fill(active, indices, start, T, n_pairs)
    pair = pair.view(-1, T)  # (n_tiles, T)
    tiling = Tiling(pair, expert, pair < n_pairs, pair_pos // T, pair_pos % T, start)
    return Route(tiling, workspace, rows, slot_pos.view(B, k), active, indices, "native")


def _slot_indices(route: Route, s: int) -> Tensor:
    """(B, k * s) rows of a (m * s, d) table: the s rows of every slot's expert."""
    e = route.slot_expert[..., None] * s + torch.arange(s, device=route.slot_expert.device)
    return e.reshape(route.slot_expert.shape[0], -1)


def _per_slot(tiled: Tensor, route: Route) -> Tensor:
    """Tile-layout values (n_tiles, T, s) -> (B, k * s) per slot, zero where inactive."""
    s = tiled.shape[-1]
    flat = tiled.reshape(-1, s)[route.slot_pos] * route.slot_active[..., None]  # (B, k, s)
    return flat.reshape(flat.shape[0], -1)


def _padded(x: Tensor) -> Tensor:
    """x (B, d) with a row of zeros appended: the row padding slots point at."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def _gather_tiles(x: Tensor, route: Route, name: str) -> Tensor:
    """Rows of x (B, d) for every tile slot -> (n_tiles, T, d), zeros on padding."""
    padded = _padded(x)
    out = route.workspace.get(name, (route.rows.numel(), x.shape[1]), x.dtype, x.device)
    torch.index_select(padded, 0, route.rows, out=out)
    return out.view(*route.tiling.pair.shape, x.shape[1])


def _tile_rows(route: Route) -> Tensor:
    """(n_tiles, T) row of every tile slot (B on padding)."""
    return route.rows.view(route.tiling.pair.shape)


def _pair_dot(table: Tensor, W: Tensor, route: Route) -> Tensor:
    """``W[expert] @ table[rows]`` for every tile slot (n_tiles, T, s) from table (B, d),
    rows read in place, zeros on padding."""
    rows, expert = _tile_rows(route), route.tiling.expert
    if route.kernels == "native":
        return native.pair_dot(table, W, rows, expert)
    table = _padded(table)
    out = fused.pair_dot(table, W, rows, expert) if route.kernels == "inductor" else None
    return fused.eager_pair_dot(table, W, rows, expert) if out is None else out


def weight_grad_buffer(W: Tensor, route: Route, name: str) -> Tensor | None:
    """Reused memory for the gradient of an expert matrix W (m, s, d), or None.

    Autograd adopts a returned gradient as ``W.grad`` without a copy when nothing else
    refers to that tensor (a fresh view of the buffer is such a tensor), so the memory is
    never handed back between steps: freed together every step, the (m, s, d) gradients
    of W_down and W_up (19 MB each at 2048 x 4 x 576) were trimmed by glibc and faulted
    back in. Routed 2048x16 steps at B = 1024, in-process A/B, medians of 12: 104 ms and
    528 page faults per step against 128 ms and 11240 (at B = 4096 the (B, d)
    temporaries fault as much either way). Only when ``W.grad`` is None: an existing
    gradient is being accumulated into and must not share this memory. The next step's
    backward overwrites the buffer, so a caller must not keep ``W.grad`` past the
    optimiser step (the trainer does not).
    """
    if W.grad is not None or route.kernels != "native":
        return None
    return route.workspace.get(name, tuple(W.shape), W.dtype, W.device)


def _expert_grad(g: Tensor, table: Tensor, route: Route, n_experts: int,
                 out: Tensor | None = None) -> Tensor:
    """Per expert ``sum over its slots of g[t, i] (x) table[rows[t, i]]`` (m, s, d) from
    table (B, d); ``out`` (native kernels only) receives it."""
    rows = _tile_rows(route)
    if route.kernels == "native":
        return native.expert_outer(g, table, rows, route.tiling.start, out=out)
    table = _padded(table)
    out = fused.tile_outer(g, table, rows) if route.kernels == "inductor" else None
    if out is None:
        gathered = table.index_select(0, route.rows).view(*rows.shape, table.shape[1])
        out = fused.eager_tile_outer(g, gathered)
    return _sum_tiles(out, route, n_experts)


def _row_sum(tiled: Tensor, W: Tensor, route: Route, base: Tensor | None = None) -> Tensor:
    """``base + sum over a row's slots of tiled[slot] @ W[expert]`` -> (B, d), from
    tile-layout tiled (n_tiles, T, s): a gather-sum per row, no scatter; no ``base``:
    the sum alone."""
    m, s, d = W.shape
    if route.kernels == "native":
        return native.pair_sum(tiled, W, _tile_rows(route), route.tiling.start,
                               route.slot_pos.shape[0], base=base)
    per_slot = _per_slot(tiled, route)  # (B, k * s)
    out = F.embedding_bag(_slot_indices(route, s), W.reshape(m * s, d),
                          per_sample_weights=per_slot, mode="sum")
    return out if base is None else out.add_(base)


def _sum_tiles(per_tile: Tensor, route: Route, n_experts: int) -> Tensor:
    """Per-tile weight gradients (n_tiles, s, d) summed per expert -> (m, s, d)."""
    out = per_tile.new_zeros(n_experts, *per_tile.shape[1:])
    return out.index_add_(0, route.tiling.expert, per_tile)


class _RoutedDown(torch.autograd.Function):
    """``u = W_down[expert] @ xc[row]`` for every pair, in tile layout (n_tiles, T, s),
    where ``xc = x - b`` comes centred. b is an input for its gradient alone, computed
    here when xc carries no graph (see ``routed_down``)."""

    @staticmethod
    def forward(ctx, xc, b, W_down, route):
        ctx.route = route
        if route.kernels != "eager":  # the rows are read in place; backward re-reads them
            ctx.save_for_backward(xc, W_down)
            ctx.gathered = False
            return _pair_dot(xc, W_down, route)
        xt = _gather_tiles(xc, route, "rows")  # (n_tiles, T, d), saved for backward
        wt = W_down.index_select(0, route.tiling.expert)  # (n_tiles, s, d)
        ctx.save_for_backward(xt, W_down)
        ctx.gathered = True
        return torch.bmm(xt, wt.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_u):
        saved, W_down = ctx.saved_tensors
        route = ctx.route
        grad_x = grad_b = grad_w = None
        if ctx.needs_input_grad[0]:  # sum over each row's k pairs: a weighted gather-sum
            # xc's own graph (x - b) then carries b's gradient too
            grad_x = _row_sum(grad_u, W_down, route)  # (B, d)
        elif ctx.needs_input_grad[1]:
            # sum_b grad_xc[b] = sum_p (sum of p's grad_u) @ W_down[p]: no (B, d) sum
            per_tile = (grad_u * route.tiling.valid[..., None]).sum(1)  # (n_tiles, s)
            per_expert = per_tile.new_zeros(W_down.shape[:2]).index_add_(0, route.tiling.expert, per_tile)
            grad_b = -torch.einsum("ps,psd->d", per_expert, W_down)  # (d,)
        if ctx.needs_input_grad[2]:
            if ctx.gathered:
                grad_w = _sum_tiles(fused.eager_tile_outer(grad_u, saved), route, W_down.shape[0])
            else:
                grad_w = _expert_grad(grad_u.contiguous(), saved, route, W_down.shape[0],
                                      out=weight_grad_buffer(W_down, route, "grad_W_down"))
        return grad_x, grad_b, grad_w, None


class _RoutedUp(torch.autograd.Function):
    """``out[b] = base[b] + sum_{pairs of b} v @ W_up[expert]`` from tile-layout v
    (n_tiles, T, s); base (B, d) or None (zeros)."""

    @staticmethod
    def forward(ctx, v, W_up, base, route):
        ctx.save_for_backward(v, W_up)
        ctx.route = route
        return _row_sum(v, W_up, route, base)

    @staticmethod
    def backward(ctx, grad_out):
        v, W_up = ctx.saved_tensors
        route = ctx.route
        grad_v = grad_w = None
        grad_base = grad_out if ctx.needs_input_grad[2] else None
        if route.kernels == "native" and all(ctx.needs_input_grad[:2]):  # one pass over rows
            grad_v, grad_w = native.dot_outer(v, grad_out, W_up, _tile_rows(route), route.tiling.start,
                                              outer=weight_grad_buffer(W_up, route, "grad_W_up"))
            return grad_v, grad_w, grad_base, None
        if route.kernels != "eager":  # the gradient rows are read in place, never copied
            table = grad_out.contiguous()
            if ctx.needs_input_grad[0]:
                grad_v = _pair_dot(table, W_up, route)
            if ctx.needs_input_grad[1]:
                grad_w = _expert_grad(v.contiguous(), table, route, W_up.shape[0])
            return grad_v, grad_w, grad_base, None
        gt = _gather_tiles(grad_out, route, "grad_rows")  # (n_tiles, T, d), zeros on padding
        if ctx.needs_input_grad[0]:
            wt = W_up.index_select(0, route.tiling.expert)  # (n_tiles, s, d)
            grad_v = torch.bmm(gt, wt.transpose(1, 2))  # (n_tiles, T, s)
        if ctx.needs_input_grad[1]:
            grad_w = _sum_tiles(torch.bmm(v.transpose(1, 2), gt), route, W_up.shape[0])
        return grad_v, grad_w, grad_base, None


# Tile slots per chunk without autograd: a 75 MB gather at d=576. Measured at B = 4096,
# k = 32, 2048 experts (2 threads, loaded machine): 0.119 s per call against 0.112 s for
# the one full gather, and 0.126 s with 8192 slots (every small op pays a thread sync).
_INFERENCE_SLOTS = 32768


def _routed_down_chunked(x: Tensor, W_down: Tensor, route: Route) -> Tensor:
    """``routed_down`` without a graph, gathering a few tiles at a time.

    Training keeps the (n_tiles, T, d) gather of rows for the weight gradient; encoding
    needs none of it, so it walks the tiles in chunks: at B = 4096, k = 32 the full gather
    is ~0.5 GB (with the workspace's headroom) for a 9 MB input block, the chunks ~94 MB.
    """
    if route.kernels != "eager":  # these kernels never copy rows: no chunks needed
        return _pair_dot(x, W_down, route)
    n_tiles, T = route.tiling.pair.shape
    step = min(n_tiles, max(1, _INFERENCE_SLOTS // T))  # tiles per chunk
    padded = _padded(x)  # row B: zeros for padding slots
    rows = route.rows.view(n_tiles, T)
    out = x.new_empty(n_tiles, T, W_down.shape[1])  # (n_tiles, T, s)
    buffer = route.workspace.get("rows_chunk", (step * T, x.shape[1]), x.dtype, x.device)
    for start in range(0, n_tiles, step):
        stop = min(start + step, n_tiles)
        xt = torch.index_select(padded, 0, rows[start:stop].reshape(-1), out=buffer[: (stop - start) * T])  # (chunk * T, d)
        wt = W_down.index_select(0, route.tiling.expert[start:stop])  # (chunk, s, d)
        torch.bmm(xt.view(stop - start, T, -1), wt.transpose(1, 2), out=out[start:stop])
    return out


class _ChildSelect(torch.autograd.Function):
    """Every pair's best child: ``v = relu(E[p] u)[c*] D[p, c*]`` (see ``native.child_forward``)."""

    @staticmethod
    def forward(ctx, u, E_child, D_child, route):
        rows, B = _tile_rows(route), route.slot_pos.shape[0]
        v, act, arg = native.child_forward(u, E_child, D_child, rows, route.tiling.expert, B)
        ctx.save_for_backward(u, E_child, D_child, act, arg)
        ctx.route = route
        ctx.mark_non_differentiable(act, arg)
        return v, act, arg

    @staticmethod
    def backward(ctx, grad_v, grad_act, grad_arg):
        u, E_child, D_child, act, arg = ctx.saved_tensors
        route = ctx.route
        grads = native.child_backward(grad_v, u, E_child, D_child, act, arg, _tile_rows(route),
                                      route.tiling.start, route.slot_pos.shape[0])
        return (*grads, None)


def select_children(u: Tensor, E_child: Tensor, D_child: Tensor, route: Route):
    """(v (n_tiles, T, s), act (n_tiles, T), arg (n_tiles, T)): each pair's best child and
    its contribution in the subspace, by ``kernels.c`` in one pass (native routes only)."""
    return _ChildSelect.apply(u, E_child, D_child, route)


def routed_down(xc: Tensor, b: Tensor, W_down: Tensor, route: Route) -> Tensor:
    """Project every active pair's centred row ``xc = x - b`` into its expert's subspace
    -> (n_tiles, T, s). The caller centres x once (its encoder needs xc too) and passes
    b for its gradient. Training passes ``xc.detach()``: b's gradient needs only the sum
    of xc's, which is per expert (d floats from m * s), so the (B, d) input gradient is
    skipped. An xc that requires a gradient (one wanted for x) gets it, and b's then
    flows through xc's own graph."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (xc, b, W_down)):
        return _routed_down_chunked(xc, W_down, route)
    return _RoutedDown.apply(xc, b, W_down, route)


def routed_up(v: Tensor, W_up: Tensor, route: Route, base: Tensor | None = None) -> Tensor:
    """Map tile-layout subspace vectors back to input space, summed per row, added to
    ``base`` (B, d) when given (one pass instead of an extra sum) -> (B, d)."""
    return _RoutedUp.apply(v, W_up, base, route)
