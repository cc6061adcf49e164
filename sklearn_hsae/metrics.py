"""Metrics for sparse dictionaries and their hierarchies."""

from __future__ import annotations

import numpy as np
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


# ------------------------------------------------------------------------------------
# Metrics on a real language model (one module each, re-exported here).
# ------------------------------------------------------------------------------------
from ._absorption import first_letter_absorption  # noqa: E402
from ._ce_loss import ce_loss_recovered  # noqa: E402
