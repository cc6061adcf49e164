"""Data parallelism under an initialised ``torch.distributed`` group.

Every rank trains on its own contiguous shard of the rows with gradients averaged by
the trainer, so all ranks end with identical weights (``DistributedDataParallel``'s
semantics). Without an initialised group every function here is the identity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Shard:
    """Rows ``[start, stop)`` of X for one rank, sliceable like X itself."""

    def __init__(self, X, start: int, stop: int):
        self.X, self.start, self.stop = X, start, stop
        self.shape = (stop - start, X.shape[1])
        self.dtype = X.dtype

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, _ = key.indices(self.shape[0])
            return self.X[self.start + a : self.start + b]
        return self.X[self.start + np.asarray(key)]


def shard_for_rank(X):
    """Equal contiguous shards, one per rank (the last ``n % world`` rows are dropped so
    every rank takes the same number of steps)."""
    rank, size = world()
    if size == 1:
        return X
    per_rank = X.shape[0] // size
    if per_rank == 0:
        raise ValueError(f"X has {X.shape[0]} rows, fewer than the {size} ranks that share it.")
    return Shard(X, rank * per_rank, (rank + 1) * per_rank)


def local_batch_size(batch_size: int) -> int:
    """Rows per step on each rank: ``batch_size`` is the global batch."""
    size = world()[1]
    if batch_size < size:
        raise ValueError(f"batch_size={batch_size} is smaller than the {size} ranks that share each step.")
    return math.ceil(batch_size / size)


def any_rank(flag: bool) -> bool:
    """A decision all ranks agree on (an interrupt seen by one stops all)."""
    if world()[1] == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_model(model: nn.Module) -> None:
    """Every rank takes rank 0's weights and buffers."""
    if world()[1] == 1:
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def broadcast_float(value: float) -> float:
    """Rank 0's value of a host scalar (the input scale), on every rank."""
    if world()[1] == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
