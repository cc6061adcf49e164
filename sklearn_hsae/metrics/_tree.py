"""A dictionary seen as one tree: every latent's codes, decoder row, parent and level.

The hierarchy metrics of the three papers work on this view, so one implementation serves
the routed H-SAE (two levels), the tree HSAE and Tree SAE (any depth) and a flat SAE with a
post-hoc tree: the levels sit side by side (the columns of ``transform``), and a latent's
parent is a global column index, as in Tree SAE's single dictionary.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array

from ._levels import _check_codes, code_levels


class TreeView(NamedTuple):
    """All latents of a dictionary, levels side by side, coarsest first."""

    codes: sp.csr_matrix
    """(n_samples, n_latents) codes without explicit zeros: stored entries are firings."""
    parent: np.ndarray | None
    """(n_latents,) global column of each latent's parent, -1 = none; None = no tree given."""
    level: np.ndarray
    """(n_latents,) level of each latent (0 = coarsest)."""
    components: np.ndarray | None
    """(n_latents, n_features) unit decoder rows; None = not given."""


def _is_estimator(obj) -> bool:
    return hasattr(obj, "transform") and not hasattr(obj, "shape")


def tree_view(codes, X=None, *, parent_index=None, components=None) -> TreeView:
    """Codes, tree and decoder rows of an estimator (with X) or of given arrays."""
    if _is_estimator(codes):
        if X is None:
            raise TypeError(
                f"{type(codes).__name__} is an estimator: pass the activations X too."
            )
        estimator = codes
        levels = [_check_codes(level) for level in code_levels(estimator, X)]
        if parent_index is None:
            parent_index = getattr(estimator, "parent_index_by_level_", None)
        if components is None:
            components = getattr(estimator, "components_", None)
    elif isinstance(codes, (list, tuple)):
        if not codes:
            raise ValueError("Got an empty list of code levels.")
        levels = [_check_codes(c, f"codes[{i}]") for i, c in enumerate(codes)]
    else:
        levels = [_check_codes(codes)]
    rows = {level.shape[0] for level in levels}
    if len(rows) != 1:
        raise ValueError(f"Every level must code the same rows, got row counts {sorted(rows)}.")
    widths = [level.shape[1] for level in levels]
    level = np.repeat(np.arange(len(widths)), widths)
    parent = None if parent_index is None else _global_parents(parent_index, widths)
    return TreeView(
        codes=sp.hstack(levels, format="csr") if len(levels) > 1 else levels[0],
        parent=parent,
        level=level,
        components=None if components is None else unit_rows(components, level.size),
    )


def _global_parents(parent_index, widths) -> np.ndarray:
    """One global parent array from per-level local indices, or a global array checked."""
    n = sum(widths)
    per_level = isinstance(parent_index, (list, tuple)) and len(parent_index) > 0 and all(
        np.ndim(p) == 1 for p in parent_index
    )
    if not per_level:
        parent = _int_array(parent_index, "parent_index")
        if parent.shape != (n,):
            raise ValueError(f"parent_index has shape {parent.shape}, expected ({n},): one global "
                             "parent column per latent, or one array per level.")
        if parent.size and (parent.min() < -1 or parent.max() >= n):
            raise ValueError(f"parent_index must lie in [-1, {n - 1}].")
        if np.any(parent == np.arange(n)):
            raise ValueError("parent_index makes a latent its own parent.")
        return parent
    arrays = list(parent_index)
    if len(arrays) == len(widths) - 1:  # the first level's all -1 array left out
        arrays = [np.full(widths[0], -1), *arrays]
    if len(arrays) != len(widths):
        raise ValueError(f"parent_index has {len(arrays)} arrays for {len(widths)} levels; give "
                         "one per level (the first may be left out).")
    offsets = np.concatenate([[0], np.cumsum(widths)])
    out = []
    for i, local in enumerate(arrays):
        local = _int_array(local, f"parent_index[{i}]")
        upper = widths[i - 1] if i else 0
        if local.shape != (widths[i],):
            raise ValueError(f"parent_index[{i}] has shape {local.shape}, expected ({widths[i]},).")
        if local.size and (local.min() < -1 or local.max() >= upper):
            raise ValueError(f"parent_index[{i}] must lie in [-1, {upper - 1}] (the level above).")
        out.append(np.where(local >= 0, local + (offsets[i - 1] if i else 0), -1))
    return np.concatenate(out).astype(np.int64)


def _int_array(values, name) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-d array of integers, got shape {values.shape} and "
                         f"dtype {values.dtype}.")
    return values.astype(np.int64)


def unit_rows(components, n_latents=None) -> np.ndarray:
    """Decoder rows (one matrix or a list of per-level matrices) scaled to unit norm."""
    if isinstance(components, (list, tuple)):
        components = np.vstack([check_array(c, input_name="components") for c in components])
    D = check_array(components, dtype=np.float64, input_name="components")
    if n_latents is not None and D.shape[0] != n_latents:
        raise ValueError(f"components has {D.shape[0]} rows for {n_latents} latents; give one "
                         "decoder row per code column.")
    norms = np.linalg.norm(D, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"components has {int(np.sum(norms == 0))} all-zero rows; a decoder "
                         "direction needs a non-zero norm.")
    return D / norms


def firing(codes: sp.csr_matrix) -> sp.csc_matrix:
    """Binary activity (1 where a code is non-zero) as float64 CSC, one column per latent."""
    active = codes.copy().tocsc()
    active.data = np.ones_like(active.data, dtype=np.float64)
    return active.astype(np.float64, copy=False)
