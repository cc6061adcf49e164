"""The epoch loop of ``fit``: checkpoints, exact resume, Ctrl-C, divergence, data parallel.

Estimator glue (it reads the estimator's parameters) on top of ``_training``. A run is
fully described by the model, the optimizer, the step count, the state of the one
numpy RandomState that orders the data (taken at the start of the current epoch) and
how many batches of that epoch are done; the tree model's perturbation draws are
counter-based, so nothing else is random.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading

import numpy as np
import torch
import torch.distributed as dist

from ._data import iter_batches
from ._training import (
    DivergenceError,
    Trainer,
    read_checkpoint,
    save_checkpoint,
    world,
)

# Parameters that may change between an interrupted fit and its resumption.
_FREE_PARAMS = {"verbose", "checkpoint_dir", "checkpoint_every", "device", "warm_start"}


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


def fingerprint(X) -> dict:
    """Shape, dtype and a hash of 64 evenly spaced rows: enough to tell data sets apart."""
    n = X.shape[0]
    digest = hashlib.sha256()
    for row in np.unique(np.linspace(0, n - 1, 64).astype(int)):
        digest.update(np.ascontiguousarray(X[row : row + 1]).tobytes())
    return {"shape": list(X.shape), "dtype": str(np.dtype(X.dtype)), "rows_sha256": digest.hexdigest()}


def comparable_params(est) -> dict:
    params = {}
    for key, value in est.get_params().items():
        if key in _FREE_PARAMS or isinstance(value, np.random.RandomState):
            continue
        params[key] = list(value) if isinstance(value, (tuple, np.ndarray)) else value
    return params


def _rng_state(rng: np.random.RandomState) -> list:
    name, keys, pos, has_gauss, cached = rng.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_rng_state(rng: np.random.RandomState, state: list) -> None:
    name, keys, pos, has_gauss, cached = state
    rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@contextlib.contextmanager
def deferred_interrupt():
    """Turn Ctrl-C into a flag checked between steps, so a step is never cut in half.

    Only in the main thread (the only one that may install signal handlers); elsewhere
    the flag never rises and Ctrl-C behaves as usual.
    """
    flag = {"raised": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["raised"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _any_rank(flag: bool) -> bool:
    """A decision all ranks agree on (an interrupt seen by one stops all)."""
    if world()[1] == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class FitLoop:
    """Epochs of ``fit`` with checkpoints and exact resumption."""

    def __init__(self, est, X, rng: np.random.RandomState, steps_per_epoch: int, batch_size: int):
        self.est, self.X, self.rng = est, X, rng
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.epoch = self.done = 0
        self.loss_sum = None
        self.epoch_rng_state = None
        self.trainer: Trainer | None = None
        self.fingerprint = fingerprint(X)

    # ---------------------------------------------------------------- resume
    def resume(self, make_trainer) -> bool:
        """Continue from ``checkpoint_dir`` when it holds a checkpoint of this fit."""
        directory = self.est.checkpoint_dir
        found = read_checkpoint(directory) if directory is not None else None
        if found is None:
            return False
        state, meta = found
        for key, mine in (("params", comparable_params(self.est)), ("data", self.fingerprint),
                          ("world_size", world()[1])):
            if meta[key] != mine:
                raise ValueError(
                    f"checkpoint_dir={directory!r} holds a checkpoint of another fit (its {key} "
                    f"differ: {meta[key]!r} != {mine!r}); use another directory or remove it."
                )
        self.est.scale_ = meta["scale"]
        self.trainer = make_trainer()
        device = next(self.trainer.model.parameters()).device
        self.trainer.load_state_dict(_to_device(state, device))
        self.epoch, self.done = meta["epoch"], meta["batches_done"]
        self.est.loss_curve_ = list(meta["loss_curve"])
        if meta["loss_sum"] is not None:
            self.loss_sum = torch.tensor(meta["loss_sum"], dtype=torch.float32 if self.est.dtype == "float32" else torch.float64, device=device)
        _set_rng_state(self.rng, meta["epoch_rng_state"])
        return True

    def checkpoint(self) -> None:
        if self.est.checkpoint_dir is None or world()[0] != 0:
            return
        meta = {
            "params": comparable_params(self.est),
            "data": self.fingerprint,
            "world_size": world()[1],
            "scale": float(self.est.scale_),
            "epoch": self.epoch,
            "batches_done": self.done,
            "epoch_rng_state": self.epoch_rng_state,
            "loss_sum": None if self.loss_sum is None else float(self.loss_sum),
            "loss_curve": list(self.est.loss_curve_),
        }
        save_checkpoint(self.est.checkpoint_dir, self.trainer, meta)

    # ------------------------------------------------------------------- run
    def run(self, train_batch) -> None:
        """All remaining epochs. ``train_batch(rows)`` takes one step and returns its loss."""
        every = self.est.checkpoint_every
        with deferred_interrupt() as interrupt:
            while self.epoch < self.est.max_iter:
                if self.epoch_rng_state is None or self.done == 0:
                    self.epoch_rng_state = _rng_state(self.rng)
                else:  # resumed mid-epoch: replay this epoch's order from its start
                    _set_rng_state(self.rng, self.epoch_rng_state)
                order = np.random.RandomState(self.rng.randint(2**31 - 1) + 7919 * world()[0])
                batches = iter_batches(self.X, self.batch_size, order)
                for index, rows in enumerate(batches):
                    if index < self.done:
                        continue
                    try:
                        loss = train_batch(rows)
                    except DivergenceError as exc:
                        raise self._diverged(exc) from None
                    self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
                    self.done += 1
                    if _any_rank(interrupt["raised"]):
                        self.checkpoint()
                        raise KeyboardInterrupt(
                            f"fit interrupted after step {self.trainer.step_count}"
                            + (f"; checkpoint in {self.est.checkpoint_dir}" if self.est.checkpoint_dir else "")
                        )
                    if every and self.trainer.step_count % every == 0:
                        self.checkpoint()
                self.est.loss_curve_.append(self._epoch_loss())
                self.epoch, self.done, self.loss_sum = self.epoch + 1, 0, None
                self.epoch_rng_state = _rng_state(self.rng)
                self.checkpoint()

    def _epoch_loss(self) -> float:
        """Mean step loss of the epoch (under data parallelism, already averaged over ranks)."""
        return float(self.loss_sum) / self.steps_per_epoch

    def _diverged(self, exc: DivergenceError) -> DivergenceError:
        est = self.est
        lr = est._learning_rate()
        return DivergenceError(
            f"Training diverged at step {self.trainer.step_count + 1} (epoch {self.epoch + 1}): "
            f"{exc}. The estimator keeps the weights after step {self.trainer.step_count}. "
            f"Likely causes: learning_rate={lr:.3g} is too high for this data, or the inputs "
            f"have an extreme scale (normalize={est.normalize!r}); lower learning_rate or use "
            "normalize='global'."
        )


def _to_device(tree, device):
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree


def broadcast_from_rank0(model, est) -> None:
    """Every rank starts from rank 0's initial weights and input scale."""
    if world()[1] == 1:
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
    scale = torch.tensor([float(est.scale_)], dtype=torch.float64)
    dist.broadcast(scale, src=0)
    est.scale_ = float(scale.item())


def local_batch_size(batch_size: int) -> int:
    """Rows per step on each rank: ``batch_size`` is the global batch."""
    size = world()[1]
    if batch_size < size:
        raise ValueError(f"batch_size={batch_size} is smaller than the {size} ranks that share each step.")
    return math.ceil(batch_size / size)
