"""Codes per level: what the metrics measure, whatever the estimator or input form."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array


def code_levels(estimator, X) -> list:
    """Codes of X, one CSR matrix per level of the estimator, coarsest first.

    Hierarchical estimators give ``estimator.encode(X).levels``; flat ones (no ``encode``)
    have a single level, ``estimator.transform(X)``. ``scipy.sparse.hstack`` of the levels
    is ``estimator.transform(X)``.

    Parameters
    ----------
    estimator : fitted estimator of sklearn_hsae
        A fitted :class:`~sklearn_hsae.HierarchicalSparseAutoencoder` or
        :class:`~sklearn_hsae.SparseAutoencoder`.
    X : array-like of shape (n_samples, n_features)
        Activations.

    Returns
    -------
    levels : list of scipy.sparse.csr_matrix
        ``levels[i]`` has shape (n_samples, width of level i).

    Examples
    --------
    >>> from sklearn_hsae import SparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.metrics import code_levels
    >>> X, *_ = make_hierarchical_activations(n_samples=200, random_state=0)
    >>> sae = SparseAutoencoder(n_components=16, k=3, max_iter=1, random_state=0).fit(X)
    >>> [level.shape for level in code_levels(sae, X)]
    [(200, 16)]
    """
    if not hasattr(estimator, "transform"):
        raise TypeError(
            f"Expected a fitted sparse autoencoder with a transform method, got "
            f"{type(estimator).__name__}."
        )
    if hasattr(estimator, "encode"):
        return [sp.csr_matrix(level) for level in estimator.encode(X).levels]
    return [sp.csr_matrix(estimator.transform(X))]


def level_names(n_levels: int) -> list[str]:
    """Names of the levels in tables and reports, coarsest first.

    Parameters
    ----------
    n_levels : int
        Number of levels, ``len(code_levels(estimator, X))``.

    Returns
    -------
    names : list of str
        ``["codes"]`` for a flat dictionary, ``["parent", "child"]`` for two levels,
        ``["level0", "level1", ...]`` beyond.

    Examples
    --------
    >>> from sklearn_hsae.metrics import level_names
    >>> level_names(1), level_names(2), level_names(3)
    (['codes'], ['parent', 'child'], ['level0', 'level1', 'level2'])
    """
    if n_levels == 1:
        return ["codes"]
    if n_levels == 2:
        return ["parent", "child"]
    return [f"level{i}" for i in range(n_levels)]


def _check_codes(codes, name="codes") -> sp.csr_matrix:
    """A 2-d code matrix as CSR without explicit zeros, so stored entries are firings."""
    codes = check_array(codes, accept_sparse="csr", input_name=name, dtype=None)
    codes = sp.csr_matrix(codes)
    if codes.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {codes.dtype}.")
    if np.any(codes.data == 0):
        codes = codes.copy()
        codes.eliminate_zeros()
    return codes


def _levels_of(codes, X):
    """(list of CSR levels, whether a single matrix was given) for the metric helpers."""
    if hasattr(codes, "transform") and not hasattr(codes, "shape"):
        if X is None:
            raise TypeError(
                f"{type(codes).__name__} is an estimator: pass the activations too, as (estimator, X)."
            )
        return [_check_codes(level) for level in code_levels(codes, X)], False
    if X is not None:
        raise TypeError("X is only used with an estimator; got a code matrix and X.")
    if isinstance(codes, (list, tuple)):
        if not codes:
            raise ValueError("Got an empty list of code levels.")
        return [_check_codes(c, f"codes[{i}]") for i, c in enumerate(codes)], False
    return [_check_codes(codes)], True


def _per_level(values, single):
    return values[0] if single else values
