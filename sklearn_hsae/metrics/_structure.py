"""Structure of a dictionary without probes: sibling co-occurrence and composition (Tree SAE)."""

from __future__ import annotations

import numpy as np
from sklearn.utils._param_validation import validate_params

from ._tree import _is_estimator, firing, tree_view, unit_rows

_BLOCK = 1024  # decoder rows per block of cosines, to bound memory at (1024, n_latents)


def _families(parent: np.ndarray, level: np.ndarray):
    """(level, child columns) of every group of siblings: same parent, same level."""
    kids = np.flatnonzero(parent >= 0)
    order = kids[np.lexsort((kids, level[kids], parent[kids]))]  # by parent, level, column
    keys = np.stack([parent[order], level[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    return [(int(level[g[0]]), g) for g in np.split(order, starts[1:])]


@validate_params(
    {"codes": "no_validation", "X": ["array-like", None], "parent_index": "no_validation"},
    prefer_skip_nested_validation=True,
)
def sibling_cooccurrence(codes, X=None, *, parent_index=None):
    """How often siblings fire together: mean IoU of their firing sets (Tree SAE, Sec. 6.3).

    Siblings are latents of the same level with the same parent. For every unordered pair
    of siblings i, j with firing sets ``A_i``, ``A_j`` (rows where the code is non-zero)
    the pair scores ``|A_i ∩ A_j| / |A_i ∪ A_j|``; pairs where neither fires are left out
    (their IoU is 0 / 0). A level's value is the mean over all its sibling pairs, pooled
    over families (a family of s siblings brings s (s - 1) / 2 pairs); the score is the
    mean over the levels that have pairs. Lower means more diverse children: mutually
    exclusive siblings score 0, siblings that always fire together 1, and independent
    siblings of density rho about ``rho / (2 - rho)``.

    As Tree SAE's code (``average_sibling_cooccurrence``), except that it drops a whole
    family when one of its pairs is 0 / 0 and scores a level without pairs 0; here only
    the 0 / 0 pairs are dropped, and a level without pairs is NaN and left out of the mean.

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        One code matrix, a list of levels (coarsest first), or an estimator of the
        package together with ``X``.
    X : array-like of shape (n_samples, n_features), default=None
        Activations; only with an estimator.
    parent_index : list of ndarray or ndarray, default=None
        The tree: one array per level as ``parent_index_by_level_`` (the parent's index in
        the level above, -1 = none; the first level's array may be left out), or one
        global array of parent columns. None takes an estimator's own tree.

    Returns
    -------
    result : dict
        ``sibling_cooccurrence`` (float, NaN without any pair), ``per_level`` (ndarray,
        one value per level, NaN where a level has no sibling pair) and ``n_pairs``
        (ndarray of int, pairs per level).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import sibling_cooccurrence
    >>> parent = np.array([[1], [1], [1], [0]])
    >>> child = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])  # IoU 1 / 3
    >>> r = sibling_cooccurrence([parent, child], parent_index=[[-1], [0, 0]])
    >>> r["sibling_cooccurrence"], r["n_pairs"].tolist()
    (0.333..., [0, 1])
    """
    view = tree_view(codes, X, parent_index=parent_index)
    if view.parent is None:
        raise ValueError("sibling_cooccurrence needs a tree: pass parent_index (for a flat "
                         "dictionary, e.g. from posthoc_tree).")
    active = firing(view.codes)  # (n_samples, n_latents)
    counts = np.asarray(active.sum(axis=0)).ravel()
    n_levels = int(view.level.max()) + 1
    total, n_pairs = np.zeros(n_levels), np.zeros(n_levels, dtype=np.int64)
    for level, family in _families(view.parent, view.level):
        if len(family) < 2:
            continue
        sub = active[:, family]
        both = (sub.T @ sub).toarray()  # (s, s) rows where both fire
        i, j = np.triu_indices(len(family), 1)
        union = counts[family][i] + counts[family][j] - both[i, j]
        defined = union > 0
        total[level] += np.sum(both[i, j][defined] / union[defined])
        n_pairs[level] += int(defined.sum())
    per_level = np.full(n_levels, np.nan)
    np.divide(total, n_pairs, out=per_level, where=n_pairs > 0)
    scored = per_level[n_pairs > 0]
    return {
        "sibling_cooccurrence": float(scored.mean()) if scored.size else float("nan"),
        "per_level": per_level,
        "n_pairs": n_pairs,
    }


@validate_params({"components": "no_validation"}, prefer_skip_nested_validation=True)
def composition(components):
    """Redundancy of a dictionary: mean over latents of the largest cosine with another one.

    ``composition = mean_i max_{j != i} cos(d_i, d_j)`` over all decoder rows ``d`` of the
    dictionary, every level together ("the others" are all other latents, parents and
    children included), with the signed cosine, as Tree SAE's code
    (``composition_score``, Appendix D.1). Lower is better: orthogonal directions score 0
    (possible while n_latents <= n_features), duplicated directions 1; n random
    directions in d dimensions score about ``sqrt(2 ln(n) / d)``. Hierarchical
    dictionaries whose parent and child directions overlap on purpose (the tree HSAE's
    levels each reconstruct x) score high by design; compare within an architecture or
    per level (pass one level's rows).

    Parameters
    ----------
    components : array-like of shape (n_latents, n_features), list of them, or fitted estimator
        Decoder directions (any norm; rows are normalised), a list of per-level matrices,
        or an estimator, whose ``components_`` are used.

    Returns
    -------
    composition : float
        The mean of every latent's largest cosine with another latent.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import composition
    >>> D = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    >>> composition(D)  # (0.6 + 0.8 + 0.8) / 3
    0.733...
    """
    if _is_estimator(components):
        components = components.components_
    D = unit_rows(components)
    if len(D) < 2:
        raise ValueError(f"composition needs at least 2 decoder rows, got {len(D)}.")
    best = np.empty(len(D))
    for start in range(0, len(D), _BLOCK):
        cos = D[start : start + _BLOCK] @ D.T  # (block, n_latents)
        rows = np.arange(cos.shape[0])
        cos[rows, start + rows] = -np.inf  # not with itself
        best[start : start + _BLOCK] = cos.max(axis=1)
    return float(best.mean())
