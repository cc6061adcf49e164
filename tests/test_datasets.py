"""The synthetic hierarchy generator: its geometry is what the recovery tests rely on."""

import numpy as np
import pytest

from sklearn_hsae.datasets import make_hierarchical_activations


@pytest.mark.parametrize("n_children, subspace_dim", [(4, 3), (2, 3), (16, 4), (1, 2)])
def test_geometry_of_the_true_tree(n_children, subspace_dim):
    X, parents, children, tree = make_hierarchical_activations(
        n_samples=50, n_features=32, n_parents=5, n_children=n_children,
        subspace_dim=subspace_dim, random_state=0)
    assert X.shape == (50, 32) and parents.shape == (5, 32)
    assert children.shape == (5 * n_children, 32)
    np.testing.assert_array_equal(tree, np.repeat(np.arange(5), n_children))
    np.testing.assert_allclose(np.linalg.norm(parents, axis=1), 1)
    np.testing.assert_allclose(np.linalg.norm(children, axis=1), 1)
    # Children are orthogonal to their parent and live in a subspace_dim-dim subspace.
    np.testing.assert_allclose(np.einsum("cd,cd->c", children, parents[tree]), 0, atol=1e-12)
    for p in range(5):
        own = children[tree == p]
        assert np.linalg.matrix_rank(own, tol=1e-8) <= subspace_dim
        if 1 < n_children <= subspace_dim + 1:  # regular simplex: mean zero, equal angles
            np.testing.assert_allclose(own.mean(axis=0), 0, atol=1e-12)
            gram = own @ own.T
            off = gram[~np.eye(n_children, dtype=bool)]
            np.testing.assert_allclose(off, -1 / (n_children - 1), atol=1e-12)
        elif n_children > 1:
            assert np.linalg.norm(own.mean(axis=0)) < 0.05


def test_samples_are_sums_of_active_parents_and_one_child_each():
    X, parents, children, tree, pc, cc = make_hierarchical_activations(
        n_samples=200, n_features=48, n_parents=6, n_children=3, subspace_dim=2,
        n_active=2, noise=0.0, random_state=1, return_codes=True)
    np.testing.assert_allclose(X, pc @ parents + cc @ children, atol=1e-12)
    assert np.all(pc.getnnz(axis=1) == 2) and np.all(cc.getnnz(axis=1) == 2)
    for codes in (pc, cc):
        assert codes.data.min() >= 0.5 and codes.data.max() <= 1.5
    child = cc.tocoo()  # every active child hangs under an active parent of its row
    assert np.all(pc[child.row, tree[child.col]].A1 > 0)
    noisy = make_hierarchical_activations(
        n_samples=200, n_features=48, n_parents=6, n_children=3, subspace_dim=2,
        n_active=2, noise=0.1, random_state=1)[0]
    assert np.std(noisy - X) == pytest.approx(0.1, rel=0.05)


def test_seed_and_errors():
    a = make_hierarchical_activations(n_samples=10, random_state=3)[0]
    b = make_hierarchical_activations(n_samples=10, random_state=3)[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="subspace_dim=8 must be smaller than n_features=8"):
        make_hierarchical_activations(n_features=8, subspace_dim=8)
    with pytest.raises(ValueError, match="n_active=5 cannot exceed n_parents=4"):
        make_hierarchical_activations(n_parents=4, n_active=5)
    with pytest.raises(ValueError, match="'n_samples' parameter"):
        make_hierarchical_activations(n_samples=0)
