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


def test_hierarchy_consistency_hand_count():
    import scipy.sparse as sp

    from sklearn_hsae.metrics import hierarchy_consistency

    # 6 rows, parents p0, p1, p2 (p2 has no children), children c0, c1 -> p0, c2 -> p1,
    # c3 unassigned.
    parent = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    child = np.array([
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 1, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 1],
    ]) * 0.5
    tree = np.array([0, 0, 1, -1])
    r = hierarchy_consistency(sp.csr_matrix(parent), child, tree)
    # P(parent | child): c0 fires rows 0, 4 -> p0 on row 0 only: 1/2; c1 row 1: 1/1;
    # c2 rows 3, 4 -> p1 on row 3: 1/2. Mean 2/3.
    assert r["p_parent_given_child"] == pytest.approx(2 / 3)
    # P(child | parent) per pair: p0 fires rows 0-2: c0 1/3, c1 1/3; p1 rows 2, 3: c2 1/2.
    assert r["p_child_given_parent"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    # Any child: p0 covered on rows 0, 1 (2/3); p1 on row 3 (1/2).
    assert r["p_any_child_given_parent"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # Hamming: p0 {0,1,2} vs OR {0,1,4} -> rows 2, 4: 2; p1 {2,3} vs {3,4} -> 2. Mean 2.
    assert r["hamming"] == 2.0 and r["hamming_rate"] == pytest.approx(2 / 6)
    assert r["n_pairs"] == 3 and r["n_parents"] == 2
    with pytest.raises(ValueError, match="must lie in"):
        hierarchy_consistency(parent, child, np.array([0, 0, 3, -1]))
    with pytest.raises(ValueError, match="same samples"):
        hierarchy_consistency(parent[:5], child, tree)
