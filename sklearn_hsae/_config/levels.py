"""Configs of the architectures made of levels: the tree HSAE (paper 2) and Tree SAE
(paper 3, ``architecture="nested"``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .common import DEAD_TOKENS, _reparent_every, aux_k, dead_tokens

_TREE_SAE_STEPS = 97_657
"""Length of Tree SAE's released runs (paper 3's code: 500M tokens in batches of 5,120)."""
_TREE_SAE_SCHEDULE = (3000, 10_000, 50_000)
"""Paper 3's code: first reallocation, largest interval, root reset (steps of its runs)."""
_ELIGIBLE_TOKENS = 50_000
"""Paper 3's code: a parent receives children only if it fired within this many tokens."""

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
    def lr_widths(self) -> tuple[int, ...]:
        """One parameter group per level, its rate following that level's width: every
        level is a TopK over its own latents, so it takes the rate a flat SAE of that
        width would (a tree of widths 16 -> 1024 trains its 1024 at the rate of a flat
        1024, not at the capped rate of 16)."""
        return tuple(self.widths)

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
    dead_tokens: int = DEAD_TOKENS
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
    dead_tokens: int = DEAD_TOKENS
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
