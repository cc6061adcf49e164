"""Hierarchy: recovery of a known tree, and how consistently children fire with parents."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array


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
