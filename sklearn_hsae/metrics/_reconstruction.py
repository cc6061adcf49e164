"""Reconstruction and sparsity: FVU, L0, feature density, dead and dense latents."""

from __future__ import annotations

from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array

from ._levels import _levels_of, _per_level, code_levels, level_names

_BLOCK_ROWS = 4096  # rows per block when summing squared errors, to bound memory


@validate_params(
    {
        "X": ["array-like"],
        "X_hat": ["array-like"],
        "center": [StrOptions({"mean", "zero"})],
        "per_row": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def fvu(X, X_hat, *, center="mean", per_row=False):
    """Fraction of variance unexplained by a reconstruction (lower is better).

    The default is the conventional, dataset-level definition::

        FVU = sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2

    where ``mean(x)`` is the mean row of X, so predicting that mean scores 1 and a perfect
    reconstruction 0; ``1 - FVU`` is what the estimators' ``score`` returns. Other
    libraries report variants, which the two options reproduce:

    ===========================  ==================  ======================================
    ``center``, ``per_row``      formula             reported as
    ===========================  ==================  ======================================
    ``"mean"``, False (default)  ratio of sums       ``1 - score(X)`` of our estimators
    ``"mean"``, True             mean of row ratios  ``1 -`` SAEBench core's
                                                     ``explained_variance``, SAELens'
                                                     ``explained_variance_legacy``
    ``"zero"``, True             mean of row ratios  ``normalized_mean_squared_error`` of
                                                     OpenAI's sparse_autoencoder code
    ``"zero"``, False            ratio of sums       variance about zero, dataset level
    ===========================  ==================  ======================================

    The per-row ("legacy") variant averages ``||x_i - x_hat_i||^2 / ||x_i - mean(x)||^2``
    over rows, so rows near the mean weigh heavily (SAEBench and SAELens take the mean of
    each evaluation batch; here it is the mean of X). Centring at zero divides by the raw
    second moment, which, for activations with a large mean direction (as in residual
    streams), is far larger than the variance and makes the FVU look much smaller. We
    report the default.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Original activations.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstructions, e.g. ``estimator.inverse_transform(estimator.transform(X))``.
    center : {"mean", "zero"}, default="mean"
        Measure the variance about the mean row of X, or about the origin.
    per_row : bool, default=False
        Average per-row ratios instead of dividing the summed squared errors by the
        summed variance.

    Returns
    -------
    fvu : float
        The fraction of variance unexplained.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import fvu
    >>> X = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    >>> X_hat = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]])
    >>> fvu(X, X_hat)  # 4 / (8 + 4 + 20): squared distances to the mean row (3, 4)
    0.125
    >>> fvu(X, X_hat, center="zero")  # 4 / (1 + 4 + 9 + 4 + 25 + 64)
    0.0373...
    """
    X = check_array(X, dtype=(np.float64, np.float32), input_name="X")
    X_hat = check_array(X_hat, dtype=(np.float64, np.float32), input_name="X_hat")
    if X.shape != X_hat.shape:
        raise ValueError(f"X has shape {X.shape} but X_hat has shape {X_hat.shape}; they must match.")
    origin = X.mean(axis=0, dtype=np.float64) if center == "mean" else np.zeros(X.shape[1])
    residual = np.empty(len(X))  # (n,) squared error of every row
    total = np.empty(len(X))  # (n,) squared distance of every row to the centre
    for start in range(0, len(X), _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        x = X[rows].astype(np.float64)
        residual[rows] = np.square(x - X_hat[rows]).sum(axis=1)
        total[rows] = np.square(x - origin).sum(axis=1)
    if per_row:
        if np.any(total == 0):
            raise ValueError(
                f"{int(np.sum(total == 0))} row(s) of X equal the {center} row, where the "
                "per-row FVU divides by zero; use per_row=False."
            )
        return float(np.mean(residual / total))
    if total.sum() == 0:
        raise ValueError(f"X has no variance about its {center}: the FVU is undefined.")
    return float(residual.sum() / total.sum())


def l0(codes, X=None):
    """Mean number of active (non-zero) latents per row.

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        A code matrix of shape (n_samples, n_latents); a list of levels; or an estimator
        of the package, whose levels of ``X`` are measured.
    X : array-like of shape (n_samples, n_features), default=None
        Activations; only with an estimator.

    Returns
    -------
    l0 : float or list of float
        A float for one matrix, one float per level otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import l0
    >>> codes = np.array([[0.0, 1.5, 2.0], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]])
    >>> l0(codes)  # (2 + 1 + 0) / 3
    1.0
    >>> l0([codes, codes[:, :1]])
    [1.0, 0.0]
    """
    levels, single = _levels_of(codes, X)
    return _per_level([float(np.diff(c.indptr).mean()) for c in levels], single)


def feature_density(codes, X=None):
    """Fraction of rows on which each latent fires (is non-zero).

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        As in :func:`l0`.
    X : array-like of shape (n_samples, n_features), default=None
        Activations; only with an estimator.

    Returns
    -------
    density : ndarray of shape (n_latents,) or list of them
        One array for one matrix, one per level otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import feature_density
    >>> codes = np.array([[0.0, 1.5, 2.0], [0.0, 0.0, 0.3], [0.0, 0.0, 0.1], [0.0, 0.0, 0.0]])
    >>> feature_density(codes)
    array([0.  , 0.25, 0.75])
    """
    levels, single = _levels_of(codes, X)
    densities = [
        np.bincount(c.indices, minlength=c.shape[1]) / max(c.shape[0], 1) for c in levels
    ]
    return _per_level(densities, single)


def dead_fraction(codes, X=None):
    """Fraction of latents that never fire on the given rows.

    "Dead" is relative to the evaluation set: a latent counts as dead when it is zero on
    every row, so small evaluation sets overstate it (Gao et al. 2024 call a latent dead
    after 10M tokens without firing).

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        As in :func:`l0`.
    X : array-like of shape (n_samples, n_features), default=None
        Activations; only with an estimator.

    Returns
    -------
    fraction : float or list of float
        A float for one matrix, one float per level otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import dead_fraction
    >>> dead_fraction(np.array([[0.0, 1.5, 2.0, 0.0], [0.0, 0.0, 0.3, 0.0]]))
    0.5
    """
    levels, single = _levels_of(codes, X)
    return _per_level([float(np.mean(d == 0)) for d in feature_density(levels)], single)


@validate_params(
    {"threshold": [Interval(Real, 0, 1, closed="left")]},
    prefer_skip_nested_validation=True,
)
def dense_fraction(codes, X=None, *, threshold=0.1):
    """Fraction of latents that fire on more than ``threshold`` of the rows.

    Dense latents (by default those firing on more than 10% of tokens, right of -1 on a
    log10 density histogram) rarely stand for anything specific; a handful is common,
    many point at a training problem.

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        As in :func:`l0`.
    X : array-like of shape (n_samples, n_features), default=None
        Activations; only with an estimator.
    threshold : float in [0, 1), default=0.1
        Density above which a latent counts as dense.

    Returns
    -------
    fraction : float or list of float
        A float for one matrix, one float per level otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import dense_fraction
    >>> codes = np.zeros((20, 4)); codes[:2, 0] = 1.0; codes[:3, 1] = 1.0
    >>> dense_fraction(codes)  # densities 0.1 (not above 0.1), 0.15, 0, 0
    0.25
    """
    levels, single = _levels_of(codes, X)
    return _per_level([float(np.mean(d > threshold)) for d in feature_density(levels)], single)


def evaluate(estimator, X, *, dense_threshold=0.1, center="mean", per_row=False):
    """FVU, L0, dead and dense fractions of an estimator on X, in one encoding pass.

    Parameters
    ----------
    estimator : fitted estimator of sklearn_hsae
        Any estimator of the package.
    X : array-like of shape (n_samples, n_features)
        Evaluation activations (held out from training, ideally).
    dense_threshold : float, default=0.1
        Passed to :func:`dense_fraction`.
    center, per_row
        Passed to :func:`fvu`; the defaults give the conventional FVU.

    Returns
    -------
    result : dict
        ``fvu`` (float), ``l0``, ``dead_fraction`` and ``dense_fraction`` (lists with one
        float per level, coarsest first), ``l0_total`` (float, all levels together),
        ``levels`` (level names) and ``n_samples``.

    Examples
    --------
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.metrics import evaluate
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> hsae = HierarchicalSparseAutoencoder(n_parents=8, n_children=2, subspace_dim=2, k=2,
    ...                                      max_iter=1, random_state=0).fit(X)
    >>> result = evaluate(hsae, X)
    >>> sorted(result)
    ['dead_fraction', 'dense_fraction', 'fvu', 'l0', 'l0_total', 'levels', 'n_samples']
    >>> result["levels"], result["l0"][0] <= 2  # at most k=2 parents per row
    (['parent', 'child'], True)
    """
    levels = code_levels(estimator, X)
    X_hat = estimator.inverse_transform(sp.hstack(levels, format="csr"))
    density = feature_density(levels)
    l0_levels = l0(levels)
    return {
        "fvu": fvu(X, X_hat, center=center, per_row=per_row),
        "l0": l0_levels,
        "l0_total": float(sum(l0_levels)),
        "dead_fraction": [float(np.mean(d == 0)) for d in density],
        "dense_fraction": dense_fraction(levels, threshold=dense_threshold),
        "levels": level_names(len(levels)),
        "n_samples": len(levels[0].indptr) - 1,
    }
