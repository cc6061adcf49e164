"""The flat SAE baselines' config: TopK, BatchTopK, Matryoshka."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .common import DEAD_TOKENS, aux_k, dead_tokens


@dataclass(frozen=True)
class FlatConfig:
    """A flat SAE: TopK (Gao et al.), BatchTopK (Bussmann et al.), optionally Matryoshka."""

    n_features: int
    """Input dimension d."""
    n_latents: int
    """Dictionary width."""
    k: int
    """Active latents per row (TopK) or on average per row (BatchTopK): the L0."""
    activation: str = "topk"
    """``"topk"`` or ``"batchtopk"``."""
    prefixes: tuple[int, ...] = ()
    """Matryoshka nested widths, increasing, ending with ``n_latents``; empty = plain."""
    aux_coef: float = 1 / 32
    """AuxK coefficient (Gao et al. 2024); 0 turns it off."""
    aux_k: int = 0
    """Dead latents used by AuxK per row: :func:`aux_k` of the width."""
    dead_tokens: int = DEAD_TOKENS
    """A latent that has not fired for this many training tokens counts as dead."""
    threshold_momentum: float = 0.99
    """BatchTopK: EMA momentum of the inference threshold."""
    fixed_decoder_bias: bool = False
    """Keep ``b_dec`` at zero (for unit-norm inputs)."""

    @property
    def widths(self) -> tuple[int]:
        return (self.n_latents,)

    @property
    def lr_widths(self) -> tuple[int]:
        """One parameter group: the whole dictionary (all prefixes of a Matryoshka)."""
        return (self.n_latents,)

    @property
    def work_per_row(self) -> int:
        """Multiply-adds per row of a training step, roughly: the dense encoder."""
        return 2 * self.n_features * self.n_latents

    def fit_warnings(self) -> list[str]:
        return []

    def feature_names(self, prefix: str) -> list[str]:
        return [f"{prefix}{i}" for i in range(self.n_latents)]

    @classmethod
    def from_params(cls, p: Mapping, n_features: int, n_samples: int,
                    total_steps: int | None = None) -> FlatConfig:
        n = p["n_components"]
        if p["k"] > n:
            raise ValueError(f"k={p['k']} cannot exceed n_components={n}: k latents of the dictionary are active per row.")
        return cls(
            n_features=n_features,
            n_latents=n,
            k=p["k"],
            activation=p["activation"],
            prefixes=matryoshka_widths(p["matryoshka_prefixes"], n),
            aux_coef=p["aux_coef"],
            aux_k=aux_k(n_features, n),
            dead_tokens=dead_tokens(n_samples, p["batch_size"]),
            fixed_decoder_bias=p["normalize"] == "unit",
        )


def matryoshka_widths(given, n: int) -> tuple[int, ...]:
    """Matryoshka widths as increasing ints ending with ``n`` (or empty for None).

    Ints are widths in [1, n); a last entry equal to ``n`` (how SAELens writes
    ``matryoshka_widths``) is accepted. Floats in (0, 1) are fractions of ``n``.
    """
    if given is None:
        return ()
    values = np.asarray(given)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        raise ValueError(
            "matryoshka_prefixes must be a non-empty 1-d list of widths (ints) or "
            f"fractions of n_components (floats in (0, 1)), got {given!r}."
        )
    if values.dtype.kind == "f":
        if not np.all((values > 0) & (values < 1)):
            raise ValueError(
                f"Fractional matryoshka_prefixes must lie in (0, 1), got {values.tolist()}."
            )
        # A fraction names a shape: tiny dictionaries have fewer distinct levels.
        return (*sorted({max(1, int(round(f * n))) for f in values} - {n}), n)
    widths = [int(w) for w in values]
    if widths[-1] == n:  # SAELens' form: the full width as the last entry
        widths = widths[:-1]
    if any(a >= b for a, b in zip(widths, widths[1:])) or (widths and (widths[0] < 1 or widths[-1] >= n)):
        raise ValueError(
            "matryoshka_prefixes must increase strictly and lie in [1, n_components="
            f"{n}) (n_components itself only as the last entry), got {values.tolist()}."
        )
    return (*widths, n)
