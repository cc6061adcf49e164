"""Sibling co-occurrence, composition and the post-hoc tree against hand-computed values."""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hsae.metrics import composition, posthoc_tree, sibling_cooccurrence


def _fires(n_rows, *row_sets):
    """A (n_rows, len(row_sets)) code matrix: column j is 1 on the rows of row_sets[j]."""
    codes = np.zeros((n_rows, len(row_sets)))
    for j, rows in enumerate(row_sets):
        codes[list(rows), j] = 1.0
    return codes


# Three levels over 6 rows. Level 0: p0, p1. Level 1: c0, c1, c2 under p0, c3 under p1,
# c4 unassigned (fires everywhere, must not count). Level 2: g0, g1 under c0; g2, g3
# under c1 (neither ever fires); g4 alone under c3.
LEVEL0 = _fires(6, {0, 1, 2, 3}, {4, 5})
LEVEL1 = _fires(6, {0, 1, 2}, {2, 3}, set(), {4}, set(range(6)))
LEVEL2 = _fires(6, {0, 1}, {1, 2}, set(), set(), {4})
TREE = [[-1, -1], [0, 0, 0, 1, -1], [0, 0, 1, 1, 3]]


def test_sibling_cooccurrence_by_hand():
    r = sibling_cooccurrence([LEVEL0, LEVEL1, LEVEL2], parent_index=TREE)
    # Level 1, family {c0, c1, c2}: (c0, c1) share row 2 of rows {0, 1, 2, 3}: 1/4;
    # (c0, c2) and (c1, c2): c2 is silent, IoU 0. c3 is an only child. Mean 1/12 of 3 pairs.
    # Level 2: (g0, g1) share row 1 of {0, 1, 2}: 1/3; (g2, g3) is 0/0 and left out;
    # g4 is an only child. Mean 1/3 of 1 pair.
    np.testing.assert_allclose(r["per_level"], [np.nan, 1 / 12, 1 / 3])
    np.testing.assert_array_equal(r["n_pairs"], [0, 3, 1])
    # The score is the mean over levels with pairs: (1/12 + 1/3) / 2 = 5/24.
    assert r["sibling_cooccurrence"] == pytest.approx(5 / 24)
    # The first level's array may be left out; sparse codes give the same.
    same = sibling_cooccurrence([sp.csr_matrix(LEVEL0), LEVEL1, LEVEL2], parent_index=TREE[1:])
    assert same["sibling_cooccurrence"] == pytest.approx(5 / 24)


def test_sibling_cooccurrence_of_one_matrix_pools_every_pair():
    # The same dictionary as one matrix with global parent columns (p: 0-1, c: 2-6,
    # g: 7-11): one group, the 4 defined pairs pooled: (1/4 + 0 + 0 + 1/3) / 4 = 7/48.
    codes = np.hstack([LEVEL0, LEVEL1, LEVEL2])
    parent = [-1, -1, 0, 0, 0, 1, -1, 2, 2, 3, 3, 5]
    r = sibling_cooccurrence(codes, parent_index=parent)
    assert r["sibling_cooccurrence"] == pytest.approx(7 / 48)
    np.testing.assert_array_equal(r["n_pairs"], [4])


def test_sibling_cooccurrence_extremes_and_errors():
    parent = _fires(4, {0, 1, 2, 3})
    exclusive = _fires(4, {0, 1}, {2, 3})  # never together: 0
    same = _fires(4, {0, 1}, {0, 1})  # always together: 1
    assert sibling_cooccurrence([parent, exclusive], parent_index=[[0, 0]])[
        "sibling_cooccurrence"] == 0.0
    assert sibling_cooccurrence([parent, same], parent_index=[[0, 0]])["sibling_cooccurrence"] == 1.0
    only_children = sibling_cooccurrence([parent, same], parent_index=[[0, -1]])
    assert np.isnan(only_children["sibling_cooccurrence"])
    with pytest.raises(ValueError, match="needs a tree"):
        sibling_cooccurrence([parent, same])
    with pytest.raises(ValueError, match=r"parent_index\[1\] must lie in \[-1, 0\]"):
        sibling_cooccurrence([parent, same], parent_index=[[0, 1]])
    with pytest.raises(ValueError, match="3 arrays for 2 levels"):
        sibling_cooccurrence([parent, same], parent_index=[[-1], [0, 0], [0]])
    with pytest.raises(ValueError, match="its own parent"):
        sibling_cooccurrence(np.hstack([parent, same]), parent_index=[-1, 1, 0])
    with pytest.raises(ValueError, match="same rows"):
        sibling_cooccurrence([parent, same[:3]], parent_index=[[0, 0]])


def test_composition_by_hand():
    # Unit rows d0 = e0, d1 = (0.6, 0.8, 0), d2 = e2, d3 = -e2 (given at other norms).
    # Best other cosine: d0 0.6 (d1), d1 0.6 (d0), d2 0 (d0 or d1; d3 is -1), d3 0.
    D = np.array([[2.0, 0, 0], [0.6, 0.8, 0], [0, 0, 3.0], [0, 0, -1.0]])
    assert composition(D) == pytest.approx((0.6 + 0.6 + 0 + 0) / 4)
    # Every level together: a list of per-level rows, or an estimator's components_.
    assert composition([D[:1], D[1:]]) == pytest.approx(0.3)
    assert composition(SimpleNamespace(components_=D, transform=None)) == pytest.approx(0.3)
    assert composition(np.vstack([D, D[:1]])) == pytest.approx((1 + 0.6 + 0 + 0 + 1) / 5)
    with pytest.raises(ValueError, match="at least 2 decoder rows"):
        composition(D[:1])
    with pytest.raises(ValueError, match="all-zero rows"):
        composition(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_posthoc_tree_by_decoder_cosine():
    parents = np.eye(3)[:2]
    # Best cosines: child 0 -> p0 (0.8), child 1 -> p1 (0.8), child 2 -> p0 (0.1),
    # child 3 -> p1 (0.707), child 4 ties p0 and p1 (0.6) -> the lower index.
    children = np.array([[0.8, 0.6, 0], [0.6, 0.8, 0], [0.1, 0, 0.995], [0, 0.5, 0.5],
                         [0.6, 0.6, 0.529]])
    np.testing.assert_array_equal(posthoc_tree(parents, children, unassigned_fraction=0),
                                  [0, 1, 0, 1, 0])
    # floor(0.2 * 5) = 1 child stays unassigned: the least similar, child 2.
    np.testing.assert_array_equal(posthoc_tree(parents, children), [0, 1, -1, 1, 0])
    # floor(0.5 * 5) = 2: children 2 (0.1) and 4 (0.6).
    np.testing.assert_array_equal(posthoc_tree(parents, children, unassigned_fraction=0.5),
                                  [0, 1, -1, 1, -1])


def test_posthoc_tree_by_coactivation():
    parent_codes = _fires(6, {0, 1, 2}, {2, 3, 4})
    # P(p | c): c0 {0, 1} -> (1, 0); c1 {2, 3, 4, 5} -> (1/4, 3/4); c2 silent; c3 {2} ->
    # (1, 1), tie to p0.
    child_codes = _fires(6, {0, 1}, {2, 3, 4, 5}, set(), {2})
    np.testing.assert_array_equal(
        posthoc_tree(parent_codes, child_codes, similarity="coactivation", unassigned_fraction=0),
        [0, 1, -1, 0])  # a silent child never gets a parent
    # floor(0.5 * 4) = 2 least similar: c2 (0) and c1 (3/4).
    np.testing.assert_array_equal(
        posthoc_tree(sp.csr_matrix(parent_codes), child_codes, similarity="coactivation",
                     unassigned_fraction=0.5),
        [0, -1, -1, 0])


def test_posthoc_tree_rejects_bad_input():
    with pytest.raises(ValueError, match="same samples"):
        posthoc_tree(np.ones((4, 2)), np.ones((3, 2)), similarity="coactivation")
    with pytest.raises(ValueError, match="both are decoder rows"):
        posthoc_tree(np.ones((4, 2)), np.ones((3, 5)))
    with pytest.raises(InvalidParameterError, match="unassigned_fraction"):
        posthoc_tree(np.ones((4, 2)), np.ones((3, 2)), unassigned_fraction=1.0)
    with pytest.raises(InvalidParameterError, match="similarity"):
        posthoc_tree(np.ones((4, 2)), np.ones((3, 2)), similarity="encoder")
