"""Group (sample, expert) pairs by expert so each expert's small matrices are read once.

The routed H-SAE needs, for every active (sample b, parent p) pair, a few tiny matmuls
with parent p's own matrices (s x d, C x s, ...). Gathering those matrices per pair
costs k * s * d floats per sample; multiplying every sample by every expert is dense in
n_parents * s. Instead we sort the pairs by expert and cut each expert's run into tiles
of ``T`` pairs, so one ``bmm`` over tiles does the work and each expert's matrix is
gathered once per tile, not once per pair. Padding slots point at a sentinel row of
zeros and are masked out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


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


def tile_size_for(n_pairs: int, n_experts: int) -> int:
    """A power of two near half the mean pairs per busy expert, in [1, 64].

    Half the mean keeps padding (at most T - 1 slots per expert) below about a third of
    the pairs while tiles stay large enough for ``bmm`` to be efficient.
    """
    mean = n_pairs / max(1, min(n_experts, n_pairs))
    target = max(1.0, mean / 2)
    size = 1
    while size * 2 <= target and size < 64:
        size *= 2
    return size


def make_tiling(expert_of_pair: Tensor, n_experts: int, tile: int) -> Tiling:
    """Sort pairs by expert and cut each expert's run into tiles of ``tile`` slots.

    expert_of_pair: (n_pairs,) int64. One host synchronisation (the tile count).
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
    pair = torch.full((n_tiles, tile), n_pairs, dtype=torch.long, device=device)
    pair[tile_sorted, slot_sorted] = order
    expert = torch.repeat_interleave(
        torch.arange(n_experts, device=device), tiles_per_expert, output_size=n_tiles
    )  # (n_tiles,)
    tile_of_pair = torch.empty_like(tile_sorted)
    slot_of_pair = torch.empty_like(slot_sorted)
    tile_of_pair[order] = tile_sorted
    slot_of_pair[order] = slot_sorted
    return Tiling(pair, expert, pair < n_pairs, tile_of_pair, slot_of_pair)


def gather_rows(x: Tensor, row_of_pair: Tensor, tiling: Tiling) -> Tensor:
    """Rows of x (R, n) for every tile slot -> (n_tiles, T, n), zeros on padding."""
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])])  # (R + 1, n)
    rows = torch.cat([row_of_pair, row_of_pair.new_tensor([x.shape[0]])])  # (n_pairs + 1,)
    return padded[rows[tiling.pair]]  # (n_tiles, T, n)


def scatter_rows(y: Tensor, row_of_pair: Tensor, tiling: Tiling, n_rows: int) -> Tensor:
    """Sum tile outputs y (n_tiles, T, n) into their rows -> (n_rows, n); padding dropped."""
    rows = torch.cat([row_of_pair, row_of_pair.new_tensor([n_rows])])  # (n_pairs + 1,)
    out = y.new_zeros(n_rows + 1, y.shape[-1])
    out.index_add_(0, rows[tiling.pair].flatten(), y.flatten(0, 1))
    return out[:n_rows]
