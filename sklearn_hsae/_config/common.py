"""Derived defaults every architecture's config uses, and the optimiser's config."""

from __future__ import annotations

import math
from dataclasses import dataclass

DEAD_TOKENS = 10_000_000
"""Gao et al.: a latent that has not fired for 10M tokens counts as dead."""
_REPARENTINGS_PER_FIT = 20
"""Paper 2 re-parents every 5,000 of ~98k steps: about 20 times per run."""
_STREAM_REPARENT_EVERY = 5000
"""Paper 2's re-parenting period, for ``partial_fit`` whose length is unknown."""
_STREAM_WARMUP = 100
"""Warm-up steps of ``partial_fit``, whose total length is unknown."""

def dead_tokens(n_samples: int, batch_size: int) -> int:
    """Dead = silent for an epoch's worth of tokens, at most 10M (Gao et al.)."""
    return min(DEAD_TOKENS, max(n_samples, batch_size))


def aux_k(n_features: int, width: int) -> int:
    """Dead latents AuxK may use per row: ``min(d // 2, width)`` (Gao et al. use d / 2)."""
    return min(max(1, n_features // 2), width)


def auto_learning_rate(width: int) -> float:
    """``min(5e-3, 8e-4 / sqrt(width / 2**14))``, with ``width`` the latents competing in
    the TopK: the width scaling of Gao et al. (Fig. 3), at four times their constant
    (2e-4 suits their runs of 1e5+ steps; on SmolLM2 runs of ~600 steps it left held-out
    EV 0.05-0.07 behind), capped for tiny dictionaries."""
    return min(5e-3, 8e-4 / math.sqrt(width / 2**14))


def _reparent_every(value, total_steps: int | None) -> int:
    """``"auto"``: 20 re-parentings per fit; paper 2's 5,000 steps when streaming."""
    if value != "auto":
        return int(value)
    if total_steps is None:
        return _STREAM_REPARENT_EVERY
    return max(1, round(total_steps / _REPARENTINGS_PER_FIT))


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule; knows nothing about the architecture."""

    learning_rate: float | tuple[float, ...]
    """Peak Adam learning rate: one number for every parameter group, or one per group
    of the model (``lr_groups()``), in its order."""
    total_steps: int | None
    """Steps of the cosine schedule; ``None`` means constant after warm-up (streaming)."""
    warmup_steps: int
    """Linear warm-up from ``learning_rate / warmup_steps`` to the peak."""
    lr_end_factor: float = 0.1
    """Cosine decays to this fraction of the peak (paper 1's code: ``alpha=0.1``)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; ``0`` disables it."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def peaks(self, n_groups: int) -> tuple[float, ...]:
        """The peak rate of each of ``n_groups`` parameter groups."""
        if not isinstance(self.learning_rate, tuple):
            return (float(self.learning_rate),) * n_groups
        if len(self.learning_rate) != n_groups:
            raise ValueError(f"{len(self.learning_rate)} learning rates for {n_groups} parameter groups")
        return self.learning_rate

    def describe(self) -> str:
        """``learning_rate=...`` as a message shows it."""
        if not isinstance(self.learning_rate, tuple):
            return f"learning_rate={self.learning_rate:.3g}"
        rates = ", ".join(f"{lr:.3g}" for lr in self.learning_rate)
        return f"learning_rate={rates} (one per level)" if len(self.learning_rate) > 1 else f"learning_rate={rates}"

    @classmethod
    def from_params(cls, learning_rate, lr_widths: tuple[int, ...],
                    total_steps: int | None) -> TrainConfig:
        """``learning_rate`` is a number (every group) or ``"auto"``: each parameter group
        of the model gets :func:`auto_learning_rate` of its width in ``lr_widths`` (the
        config's: one group for flat and routed models, one per level for trees);
        warm-up over a tenth of the run (at most 1000 steps), or 100 steps when streaming."""
        if learning_rate == "auto":
            lr = tuple(auto_learning_rate(w) for w in lr_widths)
        else:
            lr = float(learning_rate)
        if total_steps is None:
            return cls(lr, None, _STREAM_WARMUP)
        return cls(lr, total_steps, max(1, min(1000, total_steps // 10)))
