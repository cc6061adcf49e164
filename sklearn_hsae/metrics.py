"""Metrics for sparse dictionaries and their hierarchies.

Reconstruction and sparsity (:func:`fvu`, :func:`l0`, :func:`feature_density`,
:func:`dead_fraction`, :func:`dense_fraction`, :func:`evaluate`) work on the codes of any
estimator of the package, one CSR matrix per level; :func:`tree_recovery` compares a
learned two-level dictionary with a known tree; :func:`hierarchy_consistency` measures
how consistently children fire with their parents.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array

_BLOCK_ROWS = 4096  # rows per block when summing squared errors, to bound memory

# ---------------------------------------------------------------------------------------
# Reconstruction and sparsity: FVU, L0, feature density, dead and dense latents.
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Hierarchy: recovery of a known tree.
# ---------------------------------------------------------------------------------------


def _unit_rows(A, name):
    A = check_array(A, dtype=np.float64, input_name=name)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has all-zero rows; directions need a non-zero norm.")
    return A / norms


def _best_match(true, learned):
    cos = np.abs(true @ learned.T)  # (n_true, n_learned)
    return cos.max(axis=1), cos.argmax(axis=1)


def tree_recovery(
    true_parents,
    true_children,
    true_child_parent,
    learned_parents,
    learned_children,
    learned_child_parent,
    *,
    threshold=0.8,
):
    """How well a learned two-level dictionary recovers a known tree.

    Every true direction is matched to the learned direction of the same level with the
    largest absolute cosine. A direction counts as recovered when that cosine reaches
    ``threshold``. A recovered child sits under its true parent when its matched learned
    child hangs under the learned match of its true parent.

    Parameters
    ----------
    true_parents : array-like of shape (n_true_parents, n_features)
        True parent directions (any norm).
    true_children : array-like of shape (n_true_children, n_features)
        True child directions.
    true_child_parent : array-like of shape (n_true_children,)
        True parent index of every true child.
    learned_parents : array-like of shape (n_parents, n_features)
        Learned parent directions, e.g. ``parent_components_``.
    learned_children : array-like of shape (n_children_total, n_features)
        Learned child directions, e.g. ``child_components_``.
    learned_child_parent : array-like of shape (n_children_total,)
        Learned parent of every learned child, e.g. ``child_parent_`` (-1 = none).
    threshold : float, default=0.8
        Cosine at which a direction counts as recovered.

    Returns
    -------
    result : dict
        ``parent_best_cos`` and ``child_best_cos`` (arrays, one value per true
        direction), ``parent_recovered`` and ``child_recovered`` (fractions of true
        directions recovered) and ``children_under_true_parent`` (fraction of recovered
        children whose learned match sits under the learned match of their true parent;
        NaN when no child is recovered).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import tree_recovery
    >>> P = np.eye(4)[:2]; C = np.eye(4)[2:]; tree = np.array([0, 1])
    >>> r = tree_recovery(P, C, tree, P[::-1], C, np.array([1, 0]))
    >>> float(r["parent_recovered"]), float(r["children_under_true_parent"])
    (1.0, 1.0)
    """
    tp = _unit_rows(true_parents, "true_parents")
    tc = _unit_rows(true_children, "true_children")
    lp = _unit_rows(learned_parents, "learned_parents")
    lc = _unit_rows(learned_children, "learned_children")
    true_child_parent = np.asarray(true_child_parent)
    learned_child_parent = np.asarray(learned_child_parent)
    if true_child_parent.shape != (len(tc),):
        raise ValueError(
            f"true_child_parent has shape {true_child_parent.shape}, expected ({len(tc)},)."
        )
    if learned_child_parent.shape != (len(lc),):
        raise ValueError(
            f"learned_child_parent has shape {learned_child_parent.shape}, expected ({len(lc)},)."
        )
    widths = {tp.shape[1], tc.shape[1], lp.shape[1], lc.shape[1]}
    if len(widths) != 1:
        raise ValueError(f"All directions need the same number of features, got {sorted(widths)}.")

    parent_cos, parent_match = _best_match(tp, lp)
    child_cos, child_match = _best_match(tc, lc)
    recovered = child_cos >= threshold
    under = learned_child_parent[child_match] == parent_match[true_child_parent]
    return {
        "parent_best_cos": parent_cos,
        "child_best_cos": child_cos,
        "parent_recovered": float(np.mean(parent_cos >= threshold)),
        "child_recovered": float(np.mean(recovered)),
        "children_under_true_parent": float(np.mean(under[recovered])) if recovered.any() else float("nan"),
    }


def _binary_csc(codes, name):
    codes = check_array(codes, accept_sparse=("csr", "csc", "coo"), dtype=None, input_name=name)
    active = sp.csc_matrix(codes) != 0
    return active.astype(np.int64).tocsc()


def hierarchy_consistency(parent_codes, child_codes, child_parent):
    """How consistently children fire with their parents (paper 2's hierarchy metrics).

    Activity is binary: a feature is active on a row when its code is non-zero. Only
    assigned pairs count (``child_parent >= 0``).

    Parameters
    ----------
    parent_codes : {array-like, sparse matrix} of shape (n_samples, n_parents)
        Parent codes, e.g. ``encode(X).parent``.
    child_codes : {array-like, sparse matrix} of shape (n_samples, n_children_total)
        Child codes, e.g. ``encode(X).child``.
    child_parent : array-like of shape (n_children_total,)
        Parent index of every child, -1 when unassigned, e.g. ``child_parent_``.

    Returns
    -------
    result : dict
        - ``p_parent_given_child``: P(parent active | child active) per assigned child
          that fires at least once, averaged over those children ("necessity").
        - ``p_child_given_parent``: P(child active | parent active) per assigned
          (parent, child) pair whose parent fires, averaged over those pairs ("coverage").
        - ``p_any_child_given_parent``: P(some child active | parent active), averaged
          over assigned parents that fire.
        - ``hamming``: for every parent with at least one assigned child, the number of
          rows on which the parent's activity differs from the OR of its children's,
          averaged over those parents. It counts rows, so compare it only on the same
          evaluation set; ``hamming_rate`` is the same divided by ``n_samples``.
        - ``n_pairs``, ``n_parents``: how many pairs and parents were averaged.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import hierarchy_consistency
    >>> parent = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    >>> child = np.array([[2, 0, 0], [0, 0, 0], [0, 0, 5], [0, 3, 0]])
    >>> r = hierarchy_consistency(parent, child, [0, 0, 1])
    >>> r["p_parent_given_child"], r["p_child_given_parent"], r["hamming"]
    (0.666..., 0.5, 1.0)
    """
    P = _binary_csc(parent_codes, "parent_codes")
    C = _binary_csc(child_codes, "child_codes")
    tree = np.asarray(child_parent)
    if P.shape[0] != C.shape[0]:
        raise ValueError(
            f"parent_codes has {P.shape[0]} rows but child_codes has {C.shape[0]}; both must "
            "encode the same samples."
        )
    if tree.shape != (C.shape[1],) or tree.dtype.kind not in "iu":
        raise ValueError(
            f"child_parent must hold {C.shape[1]} integer parent indices, got shape "
            f"{tree.shape} and dtype {tree.dtype}."
        )
    if tree.size and (tree.max() >= P.shape[1] or tree.min() < -1):
        raise ValueError(f"child_parent must lie in [-1, {P.shape[1] - 1}].")
    n = P.shape[0]
    kids = np.flatnonzero(tree >= 0)
    owner = tree[kids]
    C = C[:, kids]
    both = np.asarray(C.multiply(P[:, owner]).sum(axis=0)).ravel()  # rows with c and p(c)
    child_count = np.asarray(C.sum(axis=0)).ravel()
    parent_count = np.asarray(P.sum(axis=0)).ravel()
    fires = child_count > 0
    pairs = parent_count[owner] > 0
    # OR of each parent's children: count active children per (row, parent) > 0.
    membership = sp.csr_matrix((np.ones(len(kids)), (np.arange(len(kids)), owner)), shape=(len(kids), P.shape[1]))
    any_child = ((C @ membership) > 0).astype(np.int64).tocsc()
    parents = np.unique(owner)
    disagree = np.asarray((abs(P - any_child)).sum(axis=0)).ravel()[parents]
    covered = np.asarray(any_child.multiply(P).sum(axis=0)).ravel()[parents]
    fired = parent_count[parents] > 0

    def mean(values):
        return float(np.mean(values)) if len(values) else float("nan")

    return {
        "p_parent_given_child": mean(both[fires] / child_count[fires]),
        "p_child_given_parent": mean(both[pairs] / parent_count[owner][pairs]),
        "p_any_child_given_parent": mean(covered[fired] / parent_count[parents][fired]),
        "hamming": mean(disagree),
        "hamming_rate": mean(disagree) / n if n else float("nan"),
        "n_pairs": int(pairs.sum()),
        "n_parents": int(len(parents)),
    }


# ------------------------------------------------------------------------------------
# Metrics on a real language model (one module each, re-exported here).
# ------------------------------------------------------------------------------------
from ._absorption import first_letter_absorption  # noqa: E402
from ._ce_loss import ce_loss_recovered  # noqa: E402
