"""The epoch loop of ``fit``: shuffled batches, checkpoints, exact resume, Ctrl-C.

Takes a plain :class:`LoopConfig`, the rows to train on and a ``prepare`` function that
turns a numpy batch into the scaled tensor the model sees; returns the loss curve. It
never sees an estimator: whatever the caller wants saved beside the weights (the input
scale) travels as the ``extra`` dict of the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .._data import iter_batches, tree_to_device
from .checkpoint import fingerprint, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import any_rank, world
from .trainer import DivergenceError, StepStats, Trainer


@dataclass(frozen=True)
class LoopConfig:
    """How ``fit`` walks over the data; built by the estimator from its parameters."""

    max_iter: int
    """Epochs over the rows."""
    batch_size: int
    """Rows per optimiser step on this rank."""
    checkpoint_dir: str | os.PathLike | None = None
    """Where checkpoints go (None: no checkpoints, no resumption)."""
    checkpoint_every: int | None = None
    """Also checkpoint every this many optimiser steps (besides every epoch's end)."""
    identity: dict = field(default_factory=dict)
    """What a checkpoint must match to be resumed (the estimator's parameters)."""
    divergence_hint: str = ""
    """Appended to a divergence error: what the user can change."""
    verbose: int = 0
    """A progress bar with epoch, loss and FVU when > 0."""


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


class FitLoop:
    """Epochs of ``fit`` with checkpoints and exact resumption.

    After :meth:`run` (or an exception out of it) ``loss_curve`` holds the mean loss of
    every finished epoch, ``epoch`` the finished epochs and ``l0`` the mean active latents
    per row of every level over the last finished epoch.
    """

    def __init__(self, config: LoopConfig, X, rng: np.random.RandomState,
                 prepare: Callable[[np.ndarray], torch.Tensor]):
        self.config, self.X, self.rng, self.prepare = config, X, rng, prepare
        self.steps_per_epoch = math.ceil(X.shape[0] / config.batch_size)
        self.epoch = self.done = 0
        self.loss_sum = self.l0_sum = None
        self.epoch_rng_state = None
        self.trainer: Trainer | None = None
        self.loss_curve: list[float] = []
        self.l0: list[float] | None = None
        self.identity = {**config.identity, "data": fingerprint(X), "world_size": world()[1]}

    # ---------------------------------------------------------------- resume
    def resume(self, make_trainer: Callable[[], Trainer]) -> dict | None:
        """Continue from ``checkpoint_dir`` when it holds a checkpoint of this fit.

        Returns the ``extra`` dict saved with it (None when there is nothing to resume);
        ``self.trainer`` is then the restored trainer.
        """
        directory = self.config.checkpoint_dir
        found = read_checkpoint(directory) if directory is not None else None
        if found is None:
            return None
        state, meta = found
        for key, mine in self.identity.items():
            theirs = meta["identity"].get(key)
            if theirs != mine:
                raise ValueError(
                    f"checkpoint_dir={directory!r} holds a checkpoint of another fit (its {key} "
                    f"differ: {theirs!r} != {mine!r}); use another directory or remove it."
                )
        self.trainer = make_trainer()
        model_param = next(self.trainer.model.parameters())
        self.trainer.load_state_dict(tree_to_device(state, model_param.device))
        self.epoch, self.done = meta["epoch"], meta["batches_done"]
        self.loss_curve = list(meta["loss_curve"])
        self.l0 = meta["l0"]
        dtype, device = model_param.dtype, model_param.device
        if meta["loss_sum"] is not None:
            self.loss_sum = torch.tensor(meta["loss_sum"], dtype=dtype, device=device)
            self.l0_sum = torch.tensor(meta["l0_sum"], dtype=dtype, device=device)
        set_rng_state(self.rng, meta["epoch_rng_state"])
        return meta["extra"]

    def checkpoint(self, extra: dict) -> None:
        if self.config.checkpoint_dir is None or world()[0] != 0:
            return
        meta = {
            "identity": self.identity,
            "extra": extra,
            "epoch": self.epoch,
            "batches_done": self.done,
            "epoch_rng_state": self.epoch_rng_state,
            "loss_sum": None if self.loss_sum is None else float(self.loss_sum),
            "l0_sum": None if self.l0_sum is None else self.l0_sum.tolist(),
            "loss_curve": list(self.loss_curve),
            "l0": self.l0,
        }
        save_checkpoint(self.config.checkpoint_dir, self.trainer, meta)

    # ------------------------------------------------------------------- run
    def run(self, trainer: Trainer, extra: dict) -> list[float]:
        """All remaining epochs with ``trainer``; ``extra`` is saved with every checkpoint."""
        self.trainer = trainer
        cfg = self.config
        total = cfg.max_iter * self.steps_per_epoch
        with deferred_interrupt() as interrupt, tqdm(
            total=total, initial=self.epoch * self.steps_per_epoch + self.done, desc="fit",
            unit="step", disable=not cfg.verbose, leave=False, dynamic_ncols=True,
        ) as bar:
            while self.epoch < cfg.max_iter:
                if self.epoch_rng_state is None or self.done == 0:
                    self.epoch_rng_state = rng_state(self.rng)
                else:  # resumed mid-epoch: replay this epoch's order from its start
                    set_rng_state(self.rng, self.epoch_rng_state)
                order = np.random.RandomState(self.rng.randint(2**31 - 1) + 7919 * world()[0])
                for index, rows in enumerate(iter_batches(self.X, cfg.batch_size, order)):
                    if index < self.done:
                        continue
                    self._step(rows, bar)
                    if any_rank(interrupt["raised"]):
                        self.checkpoint(extra)
                        raise KeyboardInterrupt(
                            f"fit interrupted after step {self.trainer.step_count}"
                            + (f"; checkpoint in {cfg.checkpoint_dir}" if cfg.checkpoint_dir else "")
                        )
                    if cfg.checkpoint_every and self.trainer.step_count % cfg.checkpoint_every == 0:
                        self.checkpoint(extra)
                self._end_epoch()
                self.checkpoint(extra)
        return self.loss_curve

    def _step(self, rows: np.ndarray, bar) -> None:
        x = self.prepare(rows)
        try:
            stats = self.trainer.step(x)
        except DivergenceError as exc:
            raise self._diverged(exc) from None
        self.loss_sum = stats.loss if self.loss_sum is None else self.loss_sum + stats.loss
        self.l0_sum = stats.l0 if self.l0_sum is None else self.l0_sum + stats.l0
        self.done += 1
        if self.config.verbose:
            show_progress(bar, stats, x, self.trainer.step_count, f"{self.epoch + 1}/{self.config.max_iter}")

    def _end_epoch(self) -> None:
        # Under data parallelism the step losses are already averaged over ranks.
        self.loss_curve.append(float(self.loss_sum) / self.steps_per_epoch)
        self.l0 = (self.l0_sum / self.steps_per_epoch).tolist()
        self.epoch, self.done, self.loss_sum, self.l0_sum = self.epoch + 1, 0, None, None
        self.epoch_rng_state = rng_state(self.rng)

    def _diverged(self, exc: DivergenceError) -> DivergenceError:
        return DivergenceError(
            f"Training diverged at step {self.trainer.step_count + 1} (epoch {self.epoch + 1}): "
            f"{exc}. The estimator keeps the weights after step {self.trainer.step_count}. "
            f"Likely causes: {self.trainer.config.describe()} is too high for this data"
            + (f", or {self.config.divergence_hint}" if self.config.divergence_hint else "") + "."
        )


def show_progress(bar, stats: StepStats, x: torch.Tensor, step: int, epoch: str | None = None) -> None:
    """Advance a progress bar by one step; every 10 steps show loss and batch FVU."""
    if step % 10 == 1:
        var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-30)
        postfix = {"loss": f"{stats.loss.item():.4f}", "fvu": f"{(stats.sq_error / var).item():.4f}"}
        bar.set_postfix(postfix if epoch is None else {"epoch": epoch, **postfix})
    bar.update(1)


def run_stream(trainer: Trainer, batches, n_steps: int, prepare, verbose: int, desc: str) -> tuple[float, list[float]]:
    """Train on each batch in the given order (``partial_fit``).

    Returns the mean step loss and the mean active latents per row of every level.
    """
    loss_sum = l0_sum = None
    with tqdm(total=n_steps, desc=desc, unit="step", disable=not verbose, leave=False) as bar:
        for rows in batches:
            x = prepare(rows)
            stats = trainer.step(x)
            loss_sum = stats.loss if loss_sum is None else loss_sum + stats.loss
            l0_sum = stats.l0 if l0_sum is None else l0_sum + stats.l0
            if verbose:
                show_progress(bar, stats, x, trainer.step_count)
    return float(loss_sum) / n_steps, (l0_sum / n_steps).tolist()
