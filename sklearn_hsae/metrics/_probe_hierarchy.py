"""Tree SAE's hierarchy scores: are parent/child pairs both near the child's probe direction?

Cao et al. (Tree SAE, Sec. 5.2, Eq. 5) call a pair (p, c) hierarchical when a linear probe
trained on the activations to detect c's firing points at both decoder rows: p and c are
both among the ``top`` latents most cosine-similar to the probe direction. Pairs come from
masked cosine similarity (:func:`hierarchy_mcs`, any dictionary) or from the tree itself
(:func:`hierarchy_tree_structure`).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params
from sklearn.utils.validation import check_array

from ._tree import firing, tree_view

_N_CANDIDATES = 20  # MCS candidates per parent before the firing-count filter (Tree SAE's)
_BLOCK = 256  # parents per block of masked cosines: (n_latents, 256) dense at a time

_COMMON = {
    "codes": "no_validation",
    "X": ["array-like"],
    "components": "no_validation",
    "n_parents": [Interval(Integral, 1, None, closed="left"), None],
    "dense_fraction": [Interval(Real, 0, 1, closed="right")],
    "max_children": [Interval(Integral, 1, None, closed="left")],
    "min_child_count": [Interval(Integral, 1, None, closed="left")],
    "top": [Interval(Integral, 1, None, closed="left")],
    "C": [Interval(Real, 0, None, closed="neither")],
    "random_state": ["random_state"],
}


def _sampled_parents(counts, dense_fraction, n_parents, random_state) -> np.ndarray:
    """The dense latents (most often firing first), every one once or n_parents draws."""
    n_dense = max(1, int(len(counts) * dense_fraction))
    dense = np.argsort(-counts, kind="stable")[:n_dense]
    if n_parents is None:
        return np.sort(dense)
    return check_random_state(random_state).choice(dense, size=n_parents, replace=True)


def _mcs_candidates(codes, parents, binary) -> list:
    """Per parent, the latents c != p with MCS(p, c) > 0, best first (at most 20)."""
    mask = firing(codes)  # (n, m) binary activity
    values = mask if binary else codes.tocsc().astype(np.float64)
    child_norm = np.sqrt(np.asarray(values.multiply(values).sum(axis=0)).ravel())  # (m,)
    unique = np.unique(parents)
    best = {}
    for start in range(0, len(unique), _BLOCK):
        block = unique[start : start + _BLOCK]
        vp = values[:, block]
        numerator = (values.T @ vp).toarray()  # (m, b): sum over rows of z_c z_p
        score = np.zeros_like(numerator)
        if binary:  # numerator = |A_p & A_c|: sqrt(|A_p & A_c| / |A_c|), ties stay exact
            np.divide(numerator, child_norm[:, None] ** 2, out=score, where=numerator > 0)
            score = np.sqrt(score)
        else:
            parent_norm = np.sqrt((mask.T @ vp.multiply(vp)).toarray())  # (m, b): on c's rows
            denominator = child_norm[:, None] * parent_norm
            np.divide(numerator, denominator, out=score, where=denominator > 0)
        score[block, np.arange(len(block))] = 0.0  # never its own child
        order = np.argsort(-score, axis=0, kind="stable")[:_N_CANDIDATES]  # (20, b), ties: lower
        for j, p in enumerate(block):
            best[p] = order[:, j][score[order[:, j], j] > 0]
    return [best[p] for p in parents]


def _tree_candidates(parent_of, parents) -> list:
    """Per parent, its children in the tree, in column order."""
    return [np.flatnonzero(parent_of == p) for p in parents]


def _pairs(parents, candidates, counts, n_rows, min_child_count, max_children) -> np.ndarray:
    """(n_pairs, 2) (parent, child): children firing on >= min_child_count rows (and not on
    every row, where no probe can be trained), at most max_children per parent."""
    out = []
    for p, cands in zip(parents, candidates):
        ok = cands[(counts[cands] >= min_child_count) & (counts[cands] < n_rows)]
        out.extend((p, c) for c in ok[:max_children])
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _hits(X, active, D, pairs, top, C, probes) -> np.ndarray:
    """Whether parent and child are both among the ``top`` rows of D nearest each child's
    probe. ``probes`` caches probe directions by child across calls."""
    hit = np.zeros(len(pairs), dtype=bool)
    for i, (p, c) in enumerate(pairs):
        if c not in probes:
            y = active[:, [c]].toarray().ravel() > 0
            probe = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit(X, y)
            probes[c] = probe.coef_[0]
        nearest = np.argsort(-(D @ probes[c]), kind="stable")[:top]  # ties to the lower index
        hit[i] = p in nearest and c in nearest
    return hit


def _probe_score(view, X, source, *, n_parents, dense_fraction, max_children,
                 min_child_count, top, C, random_state, binary=True, probes=None):
    """The score of one pair source ("mcs" or "tree") on a TreeView."""
    if view.components is None:
        raise ValueError("Pass components (decoder rows, one per code column) or an estimator.")
    X = check_array(X, dtype=np.float64, input_name="X")
    if len(X) != view.codes.shape[0]:
        raise ValueError(f"X has {len(X)} rows but the codes {view.codes.shape[0]}; the probes "
                         "need the activations of the coded rows.")
    scale = np.linalg.norm(X, axis=1).mean()
    X = X / scale if scale > 0 else X  # one factor for the solver: directions unchanged
    active = firing(view.codes)
    counts = np.asarray(active.sum(axis=0)).ravel()
    parents = _sampled_parents(counts, dense_fraction, n_parents, random_state)
    if source == "mcs":
        candidates = _mcs_candidates(view.codes, parents, binary)
    else:
        candidates = _tree_candidates(view.parent, parents)
    pairs = _pairs(parents, candidates, counts, len(X), min_child_count, max_children)
    hit = _hits(X, active.tocsc(), view.components, pairs, top, C, {} if probes is None else probes)
    return {
        "score": float(hit.mean()) if len(hit) else float("nan"),
        "n_pairs": len(pairs),
        "pairs": pairs,
        "hit": hit,
    }


@validate_params({**_COMMON, "binary": ["boolean"]}, prefer_skip_nested_validation=True)
def hierarchy_mcs(codes, X, *, components=None, n_parents=None, dense_fraction=0.5,
                  max_children=5, min_child_count=100, top=5, binary=True, C=1.0,
                  random_state=None):
    """Tree SAE's hierarchy score with children found by masked cosine similarity.

    Works on any dictionary, flat or not, and needs no tree. Following Tree SAE's code
    (``evals/hierarchy.py``), with ``A_i`` the rows where latent i fires:

    1. **Parents.** The ``dense_fraction`` of latents that fire most often (all levels
       together); every one of them once, or ``n_parents`` draws with replacement.
    2. **Children.** For a parent p, every other latent c is ranked by the masked cosine
       similarity (Bricken et al. 2023): the cosine between the codes of p and c over the
       rows ``A_c``. With ``binary=True`` (the paper's choice) codes count as 1 where
       active, so ``MCS(p, c) = sqrt(|A_p ∩ A_c| / |A_c|)``, the square root of
       P(p | c). Of the 20 best (MCS > 0), those firing on at least ``min_child_count``
       rows are kept, at most ``max_children``.
    3. **Probe.** For every kept child, a logistic regression on X (balanced classes,
       L2) detects the rows ``A_c``; its weight vector is the child's concept direction.
    4. **Hit.** The pair is hierarchical when p and c are both among the ``top`` latents
       whose unit decoder rows have the largest cosine with that direction.

    ``score`` is the fraction of hierarchical pairs, pooled over parents. 1 is perfect; a
    pair of unrelated latents hits about ``top / n_latents`` of the time. Unlike Tree
    SAE's code, the MCS children of a Tree SAE are not cut to the number of its tree
    children, so this score is computed the same way for every architecture and never
    depends on a tree; latents that never fire with p (MCS 0) are no candidates; and
    sklearn's logistic regression (``C``) replaces the paper's 50-epoch Adam probe.

    Cost: one logistic regression on X per distinct child. For a wide dictionary, draw
    ``n_parents`` and pass a subsample of the rows (of X and the codes alike).

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        One code matrix, a list of levels (coarsest first; the latents are their columns
        side by side), or an estimator of the package, whose codes of ``X`` are used.
    X : array-like of shape (n_samples, n_features)
        The activations the codes code; the probes are trained on them.
    components : array-like of shape (n_latents, n_features), list of them, or None
        Decoder rows, one per code column (a list: one matrix per level). None takes an
        estimator's ``components_``.
    n_parents : int or None, default=None
        None scores every dense latent once as a parent; an int draws that many with
        replacement (Tree SAE's code draws 2000), seeded by ``random_state``.
    dense_fraction : float in (0, 1], default=0.5
        Parents come from this fraction of the latents, most often firing first.
    max_children : int, default=5
        Children kept per parent.
    min_child_count : int, default=100
        Rows a child must fire on to be kept (and fewer than all rows).
    top : int, default=5
        How many latents nearest the probe direction count (Tree SAE's top-5).
    binary : bool, default=True
        Masked cosine of binary activity (the paper's) or of the code values.
    C : float, default=1.0
        Inverse L2 strength of the logistic probes (rows of X are scaled to unit mean
        norm first).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of parents when ``n_parents`` is an int.

    Returns
    -------
    result : dict
        ``score`` (fraction of pairs that are hierarchical, NaN without pairs),
        ``n_pairs``, ``pairs`` (ndarray (n_pairs, 2) of (parent, child) columns of the
        codes side by side) and ``hit`` (bool ndarray, one per pair).

    References
    ----------
    Cao et al. "Tree SAE", arXiv:2605.07922, Sec. 5.2; code: github.com/tue147/tree-sae.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import hierarchy_mcs
    >>> X = np.repeat([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], 10, axis=0)
    >>> codes = np.repeat([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 10, axis=0)
    >>> D = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> r = hierarchy_mcs(codes, X, components=D, dense_fraction=1 / 3,
    ...                   min_child_count=5, top=2)
    >>> r["pairs"].tolist(), r["score"]
    ([[0, 1]], 1.0)
    """
    view = tree_view(codes, X, components=components)
    return _probe_score(view, X, "mcs", n_parents=n_parents, dense_fraction=dense_fraction,
                        max_children=max_children, min_child_count=min_child_count, top=top,
                        C=C, random_state=random_state, binary=binary)


@validate_params({**_COMMON, "parent_index": "no_validation"}, prefer_skip_nested_validation=True)
def hierarchy_tree_structure(codes, X, *, components=None, parent_index=None, n_parents=None,
                             dense_fraction=0.5, max_children=5, min_child_count=100, top=5,
                             C=1.0, random_state=None):
    """Tree SAE's hierarchy score with the children the tree itself names.

    As :func:`hierarchy_mcs`, but a parent's candidate children are its children in the
    tree (every level's, in column order), not its best MCS partners: the score asks
    whether the dictionary's own tree links concepts that a probe finds together. Same
    parents (the dense latents), filter (``min_child_count``, ``max_children``), probes
    and hit rule. A dense latent without children brings no pair.

    Tree SAE's code keeps, per parent, as many tree children as MCS children (the first
    ``min(max_children, n_mcs, n_tree)``); here the two scores are independent, and
    every tree child firing often enough counts, up to ``max_children``. 1 is perfect; a
    random tree hits about ``top / n_latents`` of the time.

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        As in :func:`hierarchy_mcs`.
    X : array-like of shape (n_samples, n_features)
        The activations the codes code; the probes are trained on them.
    components : array-like of shape (n_latents, n_features), list of them, or None
        As in :func:`hierarchy_mcs`.
    parent_index : list of ndarray or ndarray, default=None
        The tree: one array per level as ``parent_index_by_level_`` (the first level's may
        be left out), or one global array of parent columns. None takes an estimator's
        own tree; a flat dictionary gets one from :func:`posthoc_tree`.
    n_parents, dense_fraction, max_children, min_child_count, top, C, random_state
        As in :func:`hierarchy_mcs`.

    Returns
    -------
    result : dict
        As :func:`hierarchy_mcs`: ``score``, ``n_pairs``, ``pairs`` and ``hit``.

    References
    ----------
    Cao et al. "Tree SAE", arXiv:2605.07922, Sec. 5.2; code: github.com/tue147/tree-sae.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import hierarchy_tree_structure
    >>> X = np.repeat([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 10, axis=0)
    >>> parent = np.repeat([[1.0, 0.0], [0.0, 0.0]], 10, axis=0)
    >>> child = np.repeat([[1.0, 0.0], [0.0, 1.0]], 10, axis=0)
    >>> D = np.array([[1.0, 0, 0], [-1, -1, 1], [0, 1, 0], [0, 0, 1]])
    >>> r = hierarchy_tree_structure([parent, child], X, components=D,
    ...                              parent_index=[[0, 0]], min_child_count=5, top=2)
    >>> r["pairs"].tolist(), r["hit"].tolist()  # child 3 fires apart from its parent
    ([[0, 2], [0, 3]], [True, False])
    """
    view = tree_view(codes, X, parent_index=parent_index, components=components)
    if view.parent is None:
        raise ValueError("hierarchy_tree_structure needs a tree: pass parent_index (for a "
                         "flat dictionary, e.g. from posthoc_tree).")
    return _probe_score(view, X, "tree", n_parents=n_parents, dense_fraction=dense_fraction,
                        max_children=max_children, min_child_count=min_child_count, top=top,
                        C=C, random_state=random_state)
