"""Tree SAE's probe-based hierarchy scores against hand-computed pairs and hits.

Probe directions are hand-computable when X takes only two distinct rows a and b: the
logistic loss then sees w only through w.a and w.b, and the L2 penalty removes every
component orthogonal to a - b, so the probe direction is +-(a - b) whatever the labels'
split between the two points (+ when a carries the larger share of positives).
"""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hsae import SparseAutoencoder
from sklearn_hsae.metrics import hierarchy_mcs, hierarchy_tree_structure, sibling_cooccurrence

# 20 rows: a = (1, 1, 0) on rows 0-9, b = (0, 0, 1) on rows 10-19.
X2 = np.repeat([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 10, axis=0)
# Level 0: p0 fires on rows 0-9, p1 never. Level 1: c0 on rows 0-9, c1 on rows 10-19.
PARENTS = np.repeat([[1.0, 0.0], [0.0, 0.0]], 10, axis=0)
CHILDREN = np.repeat([[1.0, 0.0], [0.0, 1.0]], 10, axis=0)
# Decoder rows (global columns p0, p1, c0, c1).
D = np.array([[1.0, 0, 0.5], [-1, -1, 1], [0, 1, 0], [0, 0, 1]])


def test_tree_structure_hits_by_hand():
    # Counts (10, 0, 10, 10); the dense half (int(4 * 0.5) = 2) is p0 and c0 (ties to the
    # lower column). p0's tree children: c0 (col 2), c1 (col 3); c0 has none.
    # Probe of c0: w ~ a - b = (1, 1, -1) / sqrt 3; decoder cosines p0 0.5 / sqrt(3 *
    # 1.25) = 0.258, p1 -1, c0 0.577, c1 -0.577 -> top 2 {c0, p0}: a hit.
    # Probe of c1: w ~ b - a; cosines p0 -0.258, p1 1, c0 -0.577, c1 0.577 -> top 2
    # {p1, c1}: p0 is missing, no hit.
    r = hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D, parent_index=[[0, 0]],
                                 min_child_count=5, top=2)
    np.testing.assert_array_equal(r["pairs"], [[0, 2], [0, 3]])
    np.testing.assert_array_equal(r["hit"], [True, False])
    assert r["score"] == 0.5 and r["n_pairs"] == 2
    # top 3 for c1: {p1, c1} and then p0 (-0.258 > -0.577 of c0): a hit.
    r = hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D, parent_index=[[0, 0]],
                                 min_child_count=5, top=3)
    np.testing.assert_array_equal(r["hit"], [True, True])
    # A global parent array over the columns side by side is the same tree.
    same = hierarchy_tree_structure(np.hstack([PARENTS, CHILDREN]), X2, components=D,
                                    parent_index=[-1, -1, 0, 0], min_child_count=5, top=2)
    np.testing.assert_array_equal(same["pairs"], r["pairs"])
    np.testing.assert_array_equal(same["hit"], [True, False])


def test_tree_structure_filters_and_draws():
    # min_child_count above every count: no pair, NaN score.
    r = hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D, parent_index=[[0, 0]],
                                 min_child_count=11, top=2)
    assert r["n_pairs"] == 0 and np.isnan(r["score"])
    # max_children=1 keeps the first tree child only.
    r = hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D, parent_index=[[0, 0]],
                                 min_child_count=5, top=2, max_children=1)
    np.testing.assert_array_equal(r["pairs"], [[0, 2]])
    # Three draws from the dense latents {p0} (dense_fraction 0.25: 1 latent) repeat its
    # two pairs three times: still half of them hit.
    r = hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D, parent_index=[[0, 0]],
                                 min_child_count=5, top=2, dense_fraction=0.25, n_parents=3,
                                 random_state=0)
    np.testing.assert_array_equal(r["pairs"], [[0, 2], [0, 3]] * 3)
    assert r["score"] == 0.5


def test_mcs_children_binary_and_valued():
    # 20 rows, columns: p fires on 0-9 (value 1 on 0-4, 3 on 5-9); a on 0-9 (value 1);
    # b on 5-14 (3 on 5-9, 1 on 10-14); c on 0-2 (value 1); d on every row.
    codes = np.zeros((20, 5))
    codes[0:5, 0], codes[5:10, 0] = 1.0, 3.0
    codes[0:10, 1] = 1.0
    codes[5:10, 2], codes[10:15, 2] = 3.0, 1.0
    codes[0:3, 3] = 1.0
    codes[:, 4] = 1.0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    D = np.eye(5, 4) + 0.1
    # Counts (10, 10, 10, 3, 20): the dense 2 are d (20) and p (10, lowest column of the 10s).
    # Binary MCS(p, .) = sqrt(|A_p & A_c| / |A_c|): a 1, b sqrt(5/10), c 1, d sqrt(10/20).
    # Order a (1), c (1), b (0.707), d (0.707); c fires on 3 < 5 rows, d on every row
    # (no probe): p keeps a, b. MCS(d, .) = 1 for p, a, b, c: d keeps p, a, b.
    r = hierarchy_mcs(codes, X, components=D, dense_fraction=0.4, min_child_count=5)
    np.testing.assert_array_equal(r["pairs"], [[0, 1], [0, 2], [4, 0], [4, 1], [4, 2]])
    # With values, MCS(p, c) = sum z_p z_c / (||z_c|| ||z_p on A_c||):
    # a (5 * 1 + 5 * 3) / (sqrt(10) sqrt(5 * 1 + 5 * 9)) = 0.894,
    # b (5 * 3 * 3) / (sqrt(5 * 9 + 5) sqrt(5 * 9)) = 0.949, c 3 / (sqrt 3 sqrt 3) = 1
    # (too rare): p keeps b first. For d: p 20 / (sqrt(50) sqrt(10)) = 0.894, a 1,
    # b 20 / (sqrt(50) sqrt(10)) = 0.894, c 1 (too rare): d keeps a first.
    r = hierarchy_mcs(codes, X, components=D, dense_fraction=0.4, min_child_count=5,
                      binary=False, max_children=1)
    np.testing.assert_array_equal(r["pairs"], [[0, 2], [4, 1]])


def test_mcs_score_by_hand():
    # With X2's two rows: latents 0 and 1 fire on rows 0-9, latent 2 on rows 10-19. The
    # dense third (int(3 / 3) = 1 latent) is latent 0; its MCS children: latent 1
    # (sqrt(10/10) = 1); latent 2 never fires with it. Probe of latent 1: w ~ (1, 1, -1);
    # decoder cosines e0 0.577, e1 0.577, e2 -0.577 -> top 2 {0, 1}: a hit.
    codes = np.repeat([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 10, axis=0)
    r = hierarchy_mcs(codes, X2, components=np.eye(3), dense_fraction=1 / 3, min_child_count=5,
                      top=2)
    np.testing.assert_array_equal(r["pairs"], [[0, 1]])
    assert r["score"] == 1.0
    # Child 1's decoder row turned away from the probe: rows e0, e2, e1 have cosines
    # 0.577, -0.577, 0.577 -> top 2 {0, 2}: child 1 missing, no hit.
    r = hierarchy_mcs(codes, X2, components=np.eye(3)[[0, 2, 1]], dense_fraction=1 / 3,
                      min_child_count=5, top=2)
    assert r["score"] == 0.0


def test_probe_scores_reject_bad_input():
    with pytest.raises(ValueError, match="Pass components"):
        hierarchy_mcs(CHILDREN, X2)
    with pytest.raises(ValueError, match="X has 19 rows but the codes 20"):
        hierarchy_mcs(CHILDREN, X2[:19], components=D[2:])
    with pytest.raises(ValueError, match="3 rows for 4 latents"):
        hierarchy_mcs([PARENTS, CHILDREN], X2, components=D[:3])
    with pytest.raises(ValueError, match="needs a tree"):
        hierarchy_tree_structure([PARENTS, CHILDREN], X2, components=D)
    with pytest.raises(InvalidParameterError, match="dense_fraction"):
        hierarchy_mcs(CHILDREN, X2, components=D[2:], dense_fraction=0.0)
    with pytest.raises(TypeError, match="pass the activations X"):
        sibling_cooccurrence(SparseAutoencoder())
