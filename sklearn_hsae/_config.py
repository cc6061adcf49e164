"""Frozen configurations handed from the estimators to the torch core.

The estimators build these from ``get_params()`` inside ``fit`` with each class's
``from_params``; the models and the training loop take them instead of loose keyword
arguments. Every derived value (``aux_k`` from ``n_features``, the dead-latent window
from the data size, the re-parenting period, the allocation schedule and the warm-up
from the step count, the automatic learning rate from the dictionary width) is decided
here, once, and every size check speaks in its own architecture's terms.

This module imports nothing from the package: it sits below the estimators and beside
the models, which read these dataclasses but never import them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_DEAD_TOKENS = 10_000_000
"""Gao et al.: a latent that has not fired for 10M tokens counts as dead."""
_REPARENTINGS_PER_FIT = 20
"""Paper 2 re-parents every 5,000 of ~98k steps: about 20 times per run."""
_STREAM_REPARENT_EVERY = 5000
"""Paper 2's re-parenting period, for ``partial_fit`` whose length is unknown."""
_STREAM_WARMUP = 100
"""Warm-up steps of ``partial_fit``, whose total length is unknown."""
_TREE_SAE_STEPS = 97_657
"""Length of Tree SAE's released runs (paper 3's code: 500M tokens in batches of 5,120)."""
_TREE_SAE_SCHEDULE = (3000, 10_000, 50_000)
"""Paper 3's code: first reallocation, largest interval, root reset (steps of its runs)."""
_ELIGIBLE_TOKENS = 50_000
"""Paper 3's code: a parent receives children only if it fired within this many tokens."""


def dead_tokens(n_samples: int, batch_size: int) -> int:
    """Dead = silent for an epoch's worth of tokens, at most 10M (Gao et al.)."""
    return min(_DEAD_TOKENS, max(n_samples, batch_size))


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

    learning_rate: float
    """Peak Adam learning rate."""
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

    @classmethod
    def from_params(cls, learning_rate, lr_width: int, total_steps: int | None) -> TrainConfig:
        """``learning_rate`` is a number or ``"auto"`` (:func:`auto_learning_rate` of
        ``lr_width``); warm-up over a tenth of the run (at most 1000 steps), or 100 steps
        when streaming."""
        lr = auto_learning_rate(lr_width) if learning_rate == "auto" else float(learning_rate)
        if total_steps is None:
            return cls(lr, None, _STREAM_WARMUP)
        return cls(lr, total_steps, max(1, min(1000, total_steps // 10)))


@dataclass(frozen=True)
class RoutedConfig:
    """The routed H-SAE of Muchane et al. (paper 1): TopK parents, one child per parent."""

    n_features: int
    """Input dimension d."""
    n_parents: int
    """Width m of the parent (top-level) dictionary."""
    n_children: int
    """Children per parent (``m_low`` in the paper's code)."""
    subspace_dim: int
    """Dimension s of each parent's private subspace."""
    k: int
    """Active parents per sample (TopK); each adds at most one child, so L0 <= 2k."""
    beta: float = 0.1
    """Weight of the parents-only reconstruction term (paper 1, Sec. 3.2)."""
    aux_coef: float = 1 / 32
    """AuxK coefficient (Gao et al. 2024); paper 1 uses none, 0 turns it off."""
    aux_k: int = 0
    """Dead parents used by AuxK per sample: :func:`aux_k` of the parent width."""
    dead_tokens: int = _DEAD_TOKENS
    """A parent that has not fired for this many training tokens counts as dead."""
    l1_coef: float = 0.0
    """L1 on all parent and active-expert child pre-activations (paper 1 uses 1e-3)."""
    ortho_coef: float = 0.0
    """Encoder/decoder bi-orthogonality penalty (paper 1 uses 0.1, Eq. 3.4)."""
    fixed_decoder_bias: bool = False
    """Keep ``b_dec`` at zero (paper 1's unit-norm inputs have no bias)."""

    @property
    def widths(self) -> tuple[int, int]:
        """Parents, then every parent's children: ``(m, m * n_children)``."""
        return self.n_parents, self.n_parents * self.n_children

    @property
    def lr_width(self) -> int:
        """The latents competing in the TopK: the parents (children pick top-1 each)."""
        return self.n_parents

    @property
    def work_per_row(self) -> int:
        """Multiply-adds per row of a training step, roughly: the dense parent encoder
        and decoder, and every active parent's down/up projection and children."""
        d = self.n_features
        return 2 * d * self.n_parents + self.k * (2 * self.subspace_dim * d + 2 * self.n_children * self.subspace_dim)

    def fit_warnings(self) -> list[str]:
        """Settings that train but are probably not what the user meant."""
        d, s = self.n_features, self.subspace_dim
        if s <= d:
            return []
        return [f"subspace_dim={s} exceeds n_features={d}: a parent's subspace of the input has "
                f"at most {d} independent directions, so the extra dimensions only repeat them; "
                f"use subspace_dim <= {d}."]

    def feature_names(self, prefix: str) -> list[str]:
        """``parent{p}``, then ``child{p}.{c}`` (child c of parent p)."""
        names = [f"{prefix}_parent{p}" for p in range(self.n_parents)]
        return names + [f"{prefix}_child{p}.{c}" for p in range(self.n_parents)
                        for c in range(self.n_children)]

    @classmethod
    def from_params(cls, p: Mapping, n_features: int, n_samples: int,
                    total_steps: int | None = None) -> RoutedConfig:
        if p["n_levels"] != 2:
            raise ValueError(
                f"architecture='routed' has exactly two levels, got n_levels={p['n_levels']}; "
                "use architecture='tree' for deeper hierarchies."
            )
        if p["sparsity"] != "topk":
            raise ValueError(
                f"architecture='routed' selects parents by TopK, got sparsity={p['sparsity']!r}; "
                "sparsity='l0' needs architecture='tree'."
            )
        if p["k"] > p["n_parents"]:
            raise ValueError(
                f"k={p['k']} active parents cannot exceed n_parents={p['n_parents']}."
            )
        return cls(
            n_features=n_features,
            n_parents=p["n_parents"],
            n_children=p["n_children"],
            subspace_dim=p["subspace_dim"],
            k=p["k"],
            beta=p["beta"],
            aux_coef=p["aux_coef"],
            aux_k=aux_k(n_features, p["n_parents"]),
            dead_tokens=dead_tokens(n_samples, p["batch_size"]),
            l1_coef=p["l1_coef"],
            ortho_coef=p["ortho_coef"],
            fixed_decoder_bias=p["normalize"] == "unit",
        )


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
    dead_tokens: int = _DEAD_TOKENS
    """A latent that has not fired for this many training tokens counts as dead."""
    threshold_momentum: float = 0.99
    """BatchTopK: EMA momentum of the inference threshold."""
    fixed_decoder_bias: bool = False
    """Keep ``b_dec`` at zero (for unit-norm inputs)."""

    @property
    def widths(self) -> tuple[int]:
        return (self.n_latents,)

    @property
    def lr_width(self) -> int:
        return self.n_latents

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


def level_widths(p: Mapping, architecture: str) -> tuple[int, ...]:
    """``n_parents * n_children ** l`` for every level of a tree-shaped architecture;
    refuses fewer than two levels and a ``k`` above the first level's width."""
    if p["n_levels"] < 2:
        raise ValueError(f"architecture={architecture!r} needs n_levels >= 2, got {p['n_levels']}.")
    widths = tuple(p["n_parents"] * p["n_children"] ** level for level in range(p["n_levels"]))
    if p["k"] > widths[0]:
        raise ValueError(
            f"k={p['k']} active features per level cannot exceed the first level's width "
            f"n_parents={p['n_parents']}."
        )
    return widths


class _Levels:
    """What configs of levels ``widths`` (tree, nested) share: names, the TopK width and
    the work per row."""

    widths: tuple[int, ...]
    n_features: int

    @property
    def lr_width(self) -> int:
        """The latents the first TopK selects from: the first level."""
        return self.widths[0]

    @property
    def work_per_row(self) -> int:
        """Multiply-adds per row of a training step, roughly: every level's encoder."""
        return 2 * self.n_features * sum(self.widths)

    def fit_warnings(self) -> list[str]:
        return []

    def feature_names(self, prefix: str) -> list[str]:
        """``level{l}_{i}``: feature i of level l."""
        return [f"{prefix}_level{level}_{i}" for level, width in enumerate(self.widths)
                for i in range(width)]


@dataclass(frozen=True)
class TreeConfig(_Levels):
    """The tree HSAE of Luo et al. (paper 2): one full SAE per level, tied parent -> child."""

    n_features: int
    """Input dimension d."""
    widths: tuple[int, ...]
    """Width of every level, coarsest first (``n_parents * n_children ** l``)."""
    k: int
    """Active latents per row and level (TopK), or the L0 target of the controller."""
    sparsity: str = "topk"
    """``"topk"`` or ``"l0"`` (JumpReLU with an L0 penalty held at ``k`` by a controller)."""
    rho: float = 0.01
    """Weight of the parent/children structural loss (paper 2: 0.01)."""
    perturb_rate: float = 0.05
    """Probability that a parent's output is replaced by its children's sum (paper 2: 5 %)."""
    reparent_every: int = 1000
    """Steps between re-assignments of every child to its most similar parent."""
    unassigned_fraction: float = 0.2
    """Fraction of least-similar children left without a parent at each re-assignment."""
    aux_coef: float = 1 / 32
    """AuxK coefficient (Gao et al. 2024); 0 turns it off."""
    aux_k: int = 0
    """Dead latents used by AuxK per row: :func:`aux_k` of the first level's width."""
    dead_tokens: int = _DEAD_TOKENS
    """A latent that has not fired for this many training tokens counts as dead."""
    fixed_decoder_bias: bool = False
    """Keep every level's ``b_dec`` at zero (for unit-norm inputs)."""
    jump_bandwidth: float = 1e-3
    """JumpReLU straight-through kernel width (Rajamanoharan et al. 2024), in scaled units."""
    l0_ema: float = 0.999
    """Momentum of the L0 estimate the controller steers (paper 2, App. A.2)."""
    l0_eta: float = 1e-3
    """Target trajectory ``dL0/dstep = -eta (L0 - k)`` (paper 2, App. A.2)."""
    l0_gain: float = 0.01
    """Multiplicative step of the L0 coefficient when L0 leaves the trajectory (not given
    in paper 2; our choice)."""

    @classmethod
    def from_params(cls, p: Mapping, n_features: int, n_samples: int,
                    total_steps: int | None = None) -> TreeConfig:
        widths = level_widths(p, "tree")
        return cls(
            n_features=n_features,
            widths=widths,
            k=p["k"],
            sparsity=p["sparsity"],
            rho=p["rho"],
            perturb_rate=p["perturb_rate"],
            reparent_every=_reparent_every(p["reparent_every"], total_steps),
            unassigned_fraction=p["unassigned_fraction"],
            aux_coef=p["aux_coef"],
            aux_k=aux_k(n_features, widths[0]),
            dead_tokens=dead_tokens(n_samples, p["batch_size"]),
            fixed_decoder_bias=p["normalize"] == "unit",
        )


def _allocation_schedule(total_steps: int | None) -> tuple[int, int, int]:
    """Paper 3's (first reallocation, largest interval, root reset) in steps: its own
    numbers when streaming, the same fractions of ``total_steps`` in ``fit``."""
    if total_steps is None:
        return _TREE_SAE_SCHEDULE
    return tuple(max(1, round(total_steps * s / _TREE_SAE_STEPS)) for s in _TREE_SAE_SCHEDULE)


@dataclass(frozen=True)
class NestedConfig(_Levels):
    """Tree SAE of Cao et al. (paper 3): one TopK dictionary in nested, cumulative levels."""

    n_features: int
    """Input dimension d."""
    widths: tuple[int, ...]
    """Width of every level, coarsest first (``n_parents * n_children ** l``)."""
    k: int
    """Active features per row and level, chosen among those whose parent is active."""
    aux_coef: float = 1 / 32
    """AuxK coefficient of every level (paper 3, Eq. 8); 0 turns it off."""
    aux_k: tuple[int, ...] = ()
    """Dead features AuxK may use per row, per level: :func:`aux_k` of the level's width."""
    dead_tokens: int = _DEAD_TOKENS
    """A feature that has not fired for this many training tokens counts as dead."""
    eligible_tokens: int = _ELIGIBLE_TOKENS
    """A parent receives children only if it fired within this many tokens."""
    realloc_first: int = _TREE_SAE_SCHEDULE[0]
    """Step of the first reallocation of dead children."""
    realloc_growth: float = 2.0
    """Factor of the reallocation interval after every reallocation (paper 3's code)."""
    realloc_max: int = _TREE_SAE_SCHEDULE[1]
    """Largest reallocation interval."""
    root_reset_step: int = _TREE_SAE_SCHEDULE[2]
    """Step at which every dead child joins the always-active root; allocation stops."""
    fixed_decoder_bias: bool = False
    """Keep ``b_dec`` at zero (for unit-norm inputs)."""

    @classmethod
    def from_params(cls, p: Mapping, n_features: int, n_samples: int,
                    total_steps: int | None = None) -> NestedConfig:
        widths = level_widths(p, "nested")
        if p["sparsity"] != "topk":
            raise ValueError(
                f"architecture='nested' selects every level by TopK, got sparsity={p['sparsity']!r}; "
                "sparsity='l0' needs architecture='tree'."
            )
        dead = dead_tokens(n_samples, p["batch_size"])
        first, largest, reset = _allocation_schedule(total_steps)
        return cls(
            n_features=n_features,
            widths=widths,
            k=p["k"],
            aux_coef=p["aux_coef"],
            aux_k=tuple(aux_k(n_features, w) for w in widths),
            dead_tokens=dead,
            eligible_tokens=min(_ELIGIBLE_TOKENS, dead),
            realloc_first=first,
            realloc_max=largest,
            root_reset_step=reset,
            fixed_decoder_bias=p["normalize"] == "unit",
        )


MODEL_CONFIGS: dict[str, type] = {
    cls.__name__: cls for cls in (RoutedConfig, FlatConfig, TreeConfig, NestedConfig)
}
"""Model configurations ``sklearn_hsae.io`` may rebuild from a file, by class name.

A file names its config type; only these are ever constructed. A new architecture adds
its config here (fields typed with int, float, bool, str, tuples of those or ``X | None``).
"""
