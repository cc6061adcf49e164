"""How each hierarchical architecture maps onto the estimator: config, exports, columns.

``HierarchicalSparseAutoencoder`` delegates every architecture-specific step to one of
these strategy objects, so the public class holds no ``if architecture == ...`` chains.
"""

from __future__ import annotations

import numpy as np
import torch

from ._config import RoutedConfig, TreeConfig
from ._models import RoutedSAE, TreeSAE
from ._sparse import codes_to_csr

_DEAD_TOKENS = 10_000_000  # Gao et al.: dead after 10M tokens without firing


def _dead_tokens(est, n_samples: int) -> int:
    """Dead = silent for an epoch's worth of tokens, at most 10M (Gao et al.)."""
    return min(_DEAD_TOKENS, max(n_samples, est.batch_size))


# Paper 2 re-parents every 5,000 of ~98k steps: about 20 times per run.
_REPARENTINGS_PER_FIT = 20
_STREAM_REPARENT_EVERY = 5000


def _reparent_every(est, total_steps: int | None) -> int:
    """``"auto"``: 20 re-parentings per fit; paper 2's 5,000 steps when streaming."""
    if est.reparent_every != "auto":
        return est.reparent_every
    if total_steps is None:
        return _STREAM_REPARENT_EVERY
    return max(1, round(total_steps / _REPARENTINGS_PER_FIT))


class RoutedArchitecture:
    """Paper 1: TopK parents, one child per active parent inside its subspace."""

    model_class = RoutedSAE

    @staticmethod
    def check(est) -> None:
        if est.n_levels != 2:
            raise ValueError(
                f"architecture='routed' has exactly two levels, got n_levels={est.n_levels}; "
                "use architecture='tree' for deeper hierarchies."
            )
        if est.sparsity != "topk":
            raise ValueError(
                f"architecture='routed' selects parents by TopK, got sparsity={est.sparsity!r}; "
                "sparsity='l0' needs architecture='tree'."
            )

    @staticmethod
    def config(est, n_features: int, n_samples: int, total_steps: int | None = None) -> RoutedConfig:
        return RoutedConfig(
            n_features=n_features,
            n_parents=est.n_parents,
            n_children=est.n_children,
            subspace_dim=est.subspace_dim,
            k=est.k,
            beta=est.beta,
            aux_coef=est.aux_coef,
            aux_k=min(max(1, n_features // 2), est.n_parents),
            dead_tokens=_dead_tokens(est, n_samples),
            l1_coef=est.l1_coef,
            ortho_coef=est.ortho_coef,
            fixed_decoder_bias=est.normalize == "unit",
        )

    @staticmethod
    def widths(est) -> tuple[int, ...]:
        return est.n_parents, est.n_parents * est.n_children

    @staticmethod
    def export(est, model: RoutedSAE, reuse: bool = False) -> None:
        state = est._model_state
        est.parent_components_ = state["W_dec"].copy()
        previous = getattr(est, "child_components_", None)
        shape = (est.n_parents * est.n_children, est.n_features_in_)
        if reuse and model.W_up.device.type == "cpu" and previous is not None and previous.shape == shape and previous.dtype == state["W_up"].dtype:
            # partial_fit updates in place: a fresh 10-100 MB array costs page faults.
            model.child_directions(out=torch.from_numpy(previous))
        else:
            directions, _ = model.child_directions()
            est.child_components_ = directions.cpu().numpy()
        est.child_parent_ = np.repeat(np.arange(est.n_parents), est.n_children)
        est.intercept_ = est._public_intercept(state["b_dec"])
        est.components_by_level_ = [est.parent_components_, est.child_components_]
        est.parent_index_by_level_ = [np.full(est.n_parents, -1), est.child_parent_]

    @staticmethod
    def integer_ranges(est) -> dict:
        """Valid [low, high) of the integer fitted arrays (checked by ``io.load``)."""
        return {
            "child_parent_": (0, est.n_parents),
            "parent_index_by_level_.0": (-1, 0),
            "parent_index_by_level_.1": (0, est.n_parents),
        }

    @staticmethod
    def components_stack(est) -> np.ndarray:
        """Parents and children add up: ``x_hat = Z @ stack + intercept_``."""
        return np.vstack([est.parent_components_, est.child_components_])

    @staticmethod
    def encode_context(est, model: RoutedSAE):
        return model.child_norms()  # (n_parents * n_children,)

    @staticmethod
    def block_levels(est, codes, row_scale, dtype, child_norms) -> list:
        P, C = est.n_parents, est.n_children
        parent = codes_to_csr(codes.parent_values, codes.parent_indices, P, dtype, row_scale)
        # Child codes multiply unit directions: fold in the norm of D_child[c] @ W_up.
        values = codes.child_values * child_norms[codes.child_indices]
        child = codes_to_csr(values, codes.child_indices, P * C, dtype, row_scale)
        return [parent, child]

    @staticmethod
    def names(est, prefix: str) -> list[str]:
        names = [f"{prefix}_parent{p}" for p in range(est.n_parents)]
        names += [f"{prefix}_child{p}.{c}" for p in range(est.n_parents) for c in range(est.n_children)]
        return names


class TreeArchitecture:
    """Paper 2: one full SAE per level, tied by a structural loss and re-parenting."""

    model_class = TreeSAE

    @staticmethod
    def check(est) -> None:
        if est.n_levels < 2:
            raise ValueError(f"architecture='tree' needs n_levels >= 2, got {est.n_levels}.")

    @staticmethod
    def config(est, n_features: int, n_samples: int, total_steps: int | None = None) -> TreeConfig:
        widths = TreeArchitecture.widths(est)
        return TreeConfig(
            n_features=n_features,
            widths=widths,
            k=est.k,
            sparsity=est.sparsity,
            rho=est.rho,
            perturb_rate=est.perturb_rate,
            reparent_every=_reparent_every(est, total_steps),
            unassigned_fraction=est.unassigned_fraction,
            aux_coef=est.aux_coef,
            aux_k=min(max(1, n_features // 2), widths[0]),
            dead_tokens=_dead_tokens(est, n_samples),
            fixed_decoder_bias=est.normalize == "unit",
        )

    @staticmethod
    def widths(est) -> tuple[int, ...]:
        return tuple(est.n_parents * est.n_children**level for level in range(est.n_levels))

    @staticmethod
    def export(est, model: TreeSAE, reuse: bool = False) -> None:
        state = est._model_state
        n = est.n_levels
        est.components_by_level_ = [state[f"levels.{i}.W_dec"].copy() for i in range(n)]
        est.parent_index_by_level_ = [state[f"levels.{i}.parent_index"].copy() for i in range(n)]
        est.intercept_by_level_ = [est._public_intercept(state[f"levels.{i}.b_dec"]) for i in range(n)]
        est.parent_components_ = est.components_by_level_[0]
        est.child_components_ = est.components_by_level_[1]
        est.child_parent_ = est.parent_index_by_level_[1]
        est.intercept_ = est.intercept_by_level_[-1]

    @staticmethod
    def integer_ranges(est) -> dict:
        """Valid [low, high) of the integer fitted arrays; -1 marks "no parent"."""
        widths = TreeArchitecture.widths(est)
        ranges = {"child_parent_": (-1, widths[0]), "parent_index_by_level_.0": (-1, 0)}
        for level in range(1, len(widths)):
            ranges[f"parent_index_by_level_.{level}"] = (-1, widths[level - 1])
        return ranges

    @staticmethod
    def components_stack(est) -> np.ndarray:
        """Every level reconstructs X alone; ``inverse_transform`` uses the finest level."""
        coarse = sum(len(c) for c in est.components_by_level_[:-1])
        zeros = np.zeros((coarse, est.n_features_in_), dtype=est.components_by_level_[-1].dtype)
        return np.vstack([zeros, est.components_by_level_[-1]])

    @staticmethod
    def encode_context(est, model: TreeSAE):
        return None

    @staticmethod
    def block_levels(est, codes, row_scale, dtype, context) -> list:
        widths = TreeArchitecture.widths(est)
        return [
            codes_to_csr(v, i, w, dtype, row_scale)
            for v, i, w in zip(codes.values, codes.indices, widths)
        ]

    @staticmethod
    def names(est, prefix: str) -> list[str]:
        return [
            f"{prefix}_level{level}_{i}"
            for level, width in enumerate(TreeArchitecture.widths(est))
            for i in range(width)
        ]


ARCHITECTURES = {"routed": RoutedArchitecture, "tree": TreeArchitecture}
