"""FVU, L0, density, dead and dense fractions against hand-computed values."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.metrics import (
    code_levels,
    dead_fraction,
    dense_fraction,
    evaluate,
    feature_density,
    fvu,
    l0,
)

X3 = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
X3_HAT = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]])


@pytest.fixture(scope="module")
def data():
    X, *_ = make_hierarchical_activations(n_samples=400, n_features=16, n_parents=6, n_children=3,
                                          subspace_dim=2, n_active=2, random_state=0)
    return X


@pytest.fixture(scope="module")
def hsae(data):
    return HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                         max_iter=5, batch_size=64, random_state=0).fit(data)


def test_fvu_variants_by_hand():
    # Mean row (3, 4): squared distances 8, 4, 20; about zero: 5, 13, 89. Error only in row 1: 4.
    assert fvu(X3, X3_HAT) == pytest.approx(4 / 32)
    assert fvu(X3, X3_HAT, per_row=True) == pytest.approx((0 / 8 + 4 / 4 + 0 / 20) / 3)
    assert fvu(X3, X3_HAT, center="zero") == pytest.approx(4 / 107)
    assert fvu(X3, X3_HAT, center="zero", per_row=True) == pytest.approx((4 / 13) / 3)
    assert fvu(X3, X3) == 0.0
    assert fvu(X3, np.tile(X3.mean(0), (3, 1))) == pytest.approx(1.0)  # the mean scores 1
    assert fvu(X3.astype(np.float32), X3_HAT.astype(np.float32)) == pytest.approx(0.125)


def test_conventional_fvu_ignores_the_mean_but_variance_about_zero_does_not():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 8))
    X_hat = X + 0.3 * rng.standard_normal((500, 8))
    offset = np.full(8, 10.0)  # a large shared direction, as in residual streams
    base = fvu(X, X_hat)
    assert base == pytest.approx(0.09, abs=0.01)  # 0.3^2 of unit variance
    assert fvu(X + offset, X_hat + offset) == pytest.approx(base, rel=1e-12)
    about_zero = fvu(X + offset, X_hat + offset, center="zero")
    expected = np.square(X - X_hat).sum() / np.square(X + offset).sum()
    assert about_zero == pytest.approx(expected, rel=1e-12)
    assert about_zero < base / 50  # ~0.09 / (1 + 100): the offset hides the error
    # The per-row legacy variant differs from the ratio of sums when rows differ in norm.
    X_hat2 = X.copy()
    X_hat2[0] += 1.0  # one row badly reconstructed
    ratio_of_sums = fvu(X, X_hat2)
    assert ratio_of_sums == pytest.approx(8 / np.square(X - X.mean(0)).sum(), rel=1e-12)
    per_row = fvu(X, X_hat2, per_row=True)
    assert per_row == pytest.approx(8 / np.square(X[0] - X.mean(0)).sum() / 500, rel=1e-12)


def test_fvu_rejects_bad_input():
    with pytest.raises(ValueError, match=r"X has shape \(3, 2\) but X_hat has shape \(2, 2\)"):
        fvu(X3, X3_HAT[:2])
    with pytest.raises(ValueError, match="no variance about its mean"):
        fvu(np.ones((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="1 row.*equal the mean row.*per_row=False"):
        fvu(np.array([[0.0], [1.0], [2.0]]), np.zeros((3, 1)), per_row=True)
    with pytest.raises(InvalidParameterError, match="center"):
        fvu(X3, X3_HAT, center="median")
    with pytest.raises(ValueError, match="NaN"):
        fvu(X3, np.full_like(X3, np.nan))


def test_sparsity_metrics_by_hand():
    dense = np.array([[0.0, 1.5, 2.0, 0.0],
                      [0.0, 0.0, 0.3, 0.0],
                      [0.0, 0.7, 0.1, 0.0],
                      [0.0, 0.0, 0.2, 0.0]])
    csr = sp.csr_matrix(dense)
    csr.data[csr.indices == 1] = [1.5, 0.0]  # an explicitly stored zero does not fire
    for codes, col1 in ((dense, 0.5), (csr, 0.25)):
        density = feature_density(codes)
        np.testing.assert_allclose(density, [0.0, col1, 1.0, 0.0])
        assert l0(codes) == pytest.approx(1 + col1)
        assert dead_fraction(codes) == 0.5
    assert dense_fraction(dense) == 0.5  # columns 1 (0.5) and 2 (1.0)
    assert dense_fraction(dense, threshold=0.5) == 0.25  # 0.5 is not above 0.5
    assert l0([dense, dense[:, :2]]) == [1.5, 0.5]
    np.testing.assert_allclose(feature_density([dense[:, :2]])[0], [0.0, 0.5])
    assert csr.nnz == 6  # the input was not modified


def test_sparsity_metrics_reject_bad_input(hsae, data):
    with pytest.raises(TypeError, match="pass the activations too"):
        l0(hsae)
    with pytest.raises(TypeError, match="X is only used with an estimator"):
        l0(np.eye(3), data)
    with pytest.raises(ValueError, match="empty list"):
        feature_density([])
    with pytest.raises(InvalidParameterError, match="threshold"):
        dense_fraction(np.eye(3), threshold=1.5)
    with pytest.raises(ValueError, match="2D array"):
        l0(np.ones(3))
    with pytest.raises(TypeError, match="fitted sparse autoencoder"):
        code_levels(object(), data)


def test_metrics_of_an_estimator_are_those_of_its_levels(hsae, data):
    codes = hsae.encode(data)
    parent, child = codes.parent.toarray(), codes.child.toarray()
    expected_l0 = [np.mean((parent != 0).sum(1)), np.mean((child != 0).sum(1))]
    assert l0(hsae, data) == pytest.approx(expected_l0)
    assert expected_l0[0] <= 2 and expected_l0[1] <= expected_l0[0]  # k=2, <= one child each
    density = feature_density(hsae, data)
    np.testing.assert_allclose(density[1], (child != 0).mean(0))
    assert dead_fraction(hsae, data) == [np.mean(~parent.any(0)), np.mean(~child.any(0))]

    result = evaluate(hsae, data)
    assert result["levels"] == ["parent", "child"]
    assert result["l0"] == pytest.approx(expected_l0)
    assert result["l0_total"] == pytest.approx(sum(expected_l0))
    assert result["dense_fraction"] == [np.mean((parent != 0).mean(0) > 0.1),
                                        np.mean((child != 0).mean(0) > 0.1)]
    assert result["n_samples"] == 400
    # The conventional FVU is what the estimator's score reports (1 - explained variance).
    assert result["fvu"] == pytest.approx(1 - hsae.score(data), abs=1e-5)
    legacy = evaluate(hsae, data, per_row=True)["fvu"]
    assert legacy != pytest.approx(result["fvu"], rel=1e-3)


def test_evaluate_flat_estimator_has_one_level(data):
    sae = SparseAutoencoder(n_components=12, k=3, max_iter=3, batch_size=64,
                            random_state=0).fit(data)
    result = evaluate(sae, data)
    assert result["levels"] == ["codes"]
    assert result["l0"] == [pytest.approx(l0(sae.transform(data)))]
    assert result["fvu"] == pytest.approx(1 - sae.score(data), abs=1e-5)
