"""The routed H-SAE's config (paper 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .common import DEAD_TOKENS, aux_k, dead_tokens


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
    dead_tokens: int = DEAD_TOKENS
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
    def lr_widths(self) -> tuple[int]:
        """One parameter group; its rate follows the latents competing in the TopK: the
        parents (each active parent's children pick their top-1 in a tiny subspace, and
        receive gradient only through that parent's selection)."""
        return (self.n_parents,)

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
