"""The training loop, for any model that implements ``_models.common.SAEModel``.

- ``trainer.py``: Adam, the learning-rate schedule, gradient clipping, the divergence
  guard and deterministic kernels; one optimiser step at a time.
- ``loop.py``: epochs, checkpoints, exact resumption and Ctrl-C; takes a plain
  ``LoopConfig`` and an array of rows, returns the loss curve, never sees an estimator.
- ``checkpoint.py``: checkpoint files and the one atomic file writer of the package.
- ``distributed.py``: ranks, shards and broadcasts under ``torch.distributed``.

Knows no architecture: everything model-specific is behind the model interface.
"""

from .trainer import DivergenceError, StepStats, Trainer, deterministic, learning_rate_at, threads_for

__all__ = ["DivergenceError", "StepStats", "Trainer", "deterministic", "learning_rate_at", "threads_for"]
