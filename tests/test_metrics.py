"""Metrics against hand-computed values."""

import numpy as np
import pytest

from sklearn_hsae.metrics import tree_recovery


def test_tree_recovery_hand_count():
    e = np.eye(6)
    true_parents = e[:2]  # parents e0, e1
    true_children = e[2:6]  # children e2, e3 under parent 0; e4, e5 under parent 1
    true_tree = np.array([0, 0, 1, 1])
    # Learned: parent 0 ~ e1 (cos 1), parent 1 ~ e0 tilted to cos 0.6, parent 2 junk.
    learned_parents = np.array([e[1], 0.6 * e[0] + 0.8 * e[5], -e[3]])
    # Learned children: e2 (under parent 1 = the match of true parent 0: correct),
    # -e3 (cos 1, under parent 0: wrong), 0.9 e4 + ~0.436 e0 (cos 0.9, under parent 0:
    # correct), e5 at cos 0.7 (not recovered).
    learned_children = np.array([e[2], -e[3], 0.9 * e[4] + np.sqrt(1 - 0.81) * e[0],
                                 0.7 * e[5] + np.sqrt(1 - 0.49) * e[1]])
    learned_tree = np.array([1, 0, 0, 2])
    r = tree_recovery(true_parents, true_children, true_tree, learned_parents,
                      learned_children, learned_tree)
    np.testing.assert_allclose(r["parent_best_cos"], [0.6, 1.0])
    np.testing.assert_allclose(r["child_best_cos"], [1.0, 1.0, 0.9, 0.7])
    # True parent 0 -> learned parent 1 (0.6, not recovered); true parent 1 -> learned 0.
    assert r["parent_recovered"] == 0.5
    assert r["child_recovered"] == 0.75
    # Recovered children: e2 -> learned child 0 (parent 1 == match(true 0) = 1): yes;
    # e3 -> learned child 1 (parent 0 != 1): no; e4 -> learned child 2 (parent 0 ==
    # match(true 1) = 0): yes. Two of three.
    assert r["children_under_true_parent"] == pytest.approx(2 / 3)
    r = tree_recovery(true_parents, true_children, true_tree, learned_parents,
                      learned_children, learned_tree, threshold=0.5)
    assert r["parent_recovered"] == 1.0 and r["child_recovered"] == 1.0


def test_tree_recovery_rejects_inconsistent_inputs():
    e = np.eye(4)
    with pytest.raises(ValueError, match="true_child_parent has shape"):
        tree_recovery(e[:2], e[2:], [0], e[:2], e[2:], [0, 1])
    with pytest.raises(ValueError, match="same number of features"):
        tree_recovery(e[:2], e[2:], [0, 1], np.ones((2, 3)), np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="all-zero rows"):
        tree_recovery(e[:2], e[2:], [0, 1], np.zeros((2, 4)), e[2:], [0, 1])
