"""Frozen configurations handed from the estimator to the torch core.

The estimator builds these from ``get_params()`` inside ``fit``; the models and the
training loop take them instead of loose keyword arguments, so every derived value
(``aux_k`` from ``n_features``, the warm-up length from the step count, ...) is decided
in exactly one place and can be inspected.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """Active parents per sample (TopK)."""
    beta: float = 0.1
    """Weight of the parents-only reconstruction term (paper 1, Sec. 3.2)."""
    aux_coef: float = 1 / 32
    """AuxK coefficient (Gao et al. 2024); paper 1 uses none, 0 turns it off."""
    aux_k: int = 0
    """Dead parents used by AuxK per sample; the estimator sets ``min(d // 2, n_parents)``."""
    dead_tokens: int = 10_000_000
    """A parent that has not fired for this many training tokens counts as dead."""
    l1_coef: float = 0.0
    """L1 on all parent and active-expert child pre-activations (paper 1 uses 1e-3)."""
    ortho_coef: float = 0.0
    """Encoder/decoder bi-orthogonality penalty (paper 1 uses 0.1, Eq. 3.4)."""
    fixed_decoder_bias: bool = False
    """Keep ``b_dec`` at zero (paper 1's unit-norm inputs have no bias)."""


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


@dataclass(frozen=True)
class FlatConfig:
    """A flat SAE: TopK (Gao et al.), BatchTopK (Bussmann et al.), optionally Matryoshka."""

    n_features: int
    n_latents: int
    k: int
    """Active latents per row (TopK) or on average per row (BatchTopK)."""
    activation: str = "topk"
    """``"topk"`` or ``"batchtopk"``."""
    prefixes: tuple[int, ...] = ()
    """Matryoshka nested widths, increasing, ending with ``n_latents``; empty = plain."""
    aux_coef: float = 1 / 32
    aux_k: int = 0
    dead_tokens: int = 10_000_000
    threshold_momentum: float = 0.99
    """BatchTopK: EMA momentum of the inference threshold."""
    fixed_decoder_bias: bool = False


@dataclass(frozen=True)
class TreeConfig:
    """The tree HSAE of Luo et al. (paper 2): one full SAE per level, tied parent -> child."""

    n_features: int
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
    aux_k: int = 0
    dead_tokens: int = 10_000_000
    fixed_decoder_bias: bool = False
    jump_bandwidth: float = 1e-3
    """JumpReLU straight-through kernel width (Rajamanoharan et al. 2024), in scaled units."""
    l0_ema: float = 0.999
    """Momentum of the L0 estimate the controller steers (paper 2, App. A.2)."""
    l0_eta: float = 1e-3
    """Target trajectory ``dL0/dstep = -eta (L0 - k)`` (paper 2, App. A.2)."""
    l0_gain: float = 0.01
    """Multiplicative step of the L0 coefficient when L0 leaves the trajectory (not given
    in paper 2; our choice)."""


MODEL_CONFIGS: dict[str, type] = {cls.__name__: cls for cls in (RoutedConfig, FlatConfig, TreeConfig)}
"""Model configurations ``sklearn_hsae.io`` may rebuild from a file, by class name.

A file names its config type; only these are ever constructed. A new architecture adds
its config here (fields typed with int, float, bool, str, tuples of those or ``X | None``).
"""
