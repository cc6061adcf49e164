"""One vocabulary for every estimator: an evaluation loop needs no branch on the type.

The loop below takes any estimator of the package, feeds it torch tensors (as SAELens,
nnsight and TransformerLens hand them out), and reads the same attributes from all.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations

X, *_ = make_hierarchical_activations(n_samples=1500, n_features=16, n_parents=6, n_children=3,
                                      subspace_dim=2, random_state=0)
COMMON = dict(max_iter=15, batch_size=128, random_state=0)
ESTIMATORS = {
    "topk": SparseAutoencoder(n_components=24, k=3, **COMMON),
    "batchtopk": SparseAutoencoder(n_components=24, k=3, activation="batchtopk", **COMMON),
    "matryoshka": SparseAutoencoder(n_components=24, k=3, matryoshka_prefixes=[6, 24], **COMMON),
    "routed": HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2, **COMMON),
    "tree4": HierarchicalSparseAutoencoder(architecture="tree", n_parents=3, n_children=2, n_levels=4,
                                           k=2, **COMMON),
    "nested3": HierarchicalSparseAutoencoder(architecture="nested", n_parents=3, n_children=2,
                                             n_levels=3, k=2, **COMMON),
}


def evaluate_any(est, X_torch):
    """A scoring loop written once for every estimator: no isinstance, no hasattr."""
    est.fit(X_torch)
    levels = est.encode(X_torch).levels
    widths = [level.shape[1] for level in levels]
    assert [c.shape[0] for c in est.components_by_level_] == widths
    np.testing.assert_array_equal(np.vstack(est.components_by_level_), est.components_)
    assert len(est.intercept_by_level_) == len(est.l0_) == len(est.parent_index_by_level_) == len(levels)
    Z = est.transform(X_torch)
    assert sp.issparse(Z) and Z.shape[1] == est.components_.shape[0] == sum(widths)
    X_np = X_torch.double().numpy()
    ev = [1 - ((X_np - est.inverse_transform(Z, level=l)) ** 2).sum() / ((X_np - X_np.mean(0)) ** 2).sum()
          for l in range(len(levels))]
    measured_l0 = [level.getnnz(axis=1).mean() for level in levels]
    return ev, measured_l0, est.score(X_torch)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_one_loop_scores_every_estimator_on_torch_tensors(name):
    est = ESTIMATORS[name]
    ev, measured_l0, score = evaluate_any(est, torch.from_numpy(X))
    assert ev[-1] == pytest.approx(score, abs=1e-9)  # inverse_transform(level=None) is what score uses
    assert score > 0.5
    k = est.k
    for trained, measured in zip(est.l0_, measured_l0):
        assert 0 < trained <= k + 1e-9 and abs(trained - measured) < 0.5 * k
    if name in ("routed", "nested3"):  # cumulative: every level adds to those above it
        assert all(a < b for a, b in zip(ev, ev[1:]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_tensors_of_every_float_dtype(dtype):
    est = SparseAutoencoder(n_components=24, k=3, max_iter=1, batch_size=256, random_state=0).fit(X)
    tensor = torch.from_numpy(X).to(dtype)
    Z = est.transform(tensor)
    expected_dtype = np.float64 if dtype == torch.float64 else np.float32
    assert sp.isspmatrix_csr(Z) and Z.dtype == expected_dtype
    reference = est.transform(tensor.to(torch.float32).numpy() if dtype != torch.float64 else X)
    np.testing.assert_array_equal(Z.toarray(), reference.toarray())
    assert isinstance(est.score(tensor), float)
    assert est.encode(tensor).levels[0].shape == (len(X), 24)
    est.partial_fit(tensor)  # training accepts tensors too


def test_transform_of_a_tensor_equals_transform_of_its_array():
    est = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2, max_iter=1,
                                        random_state=0).fit(torch.from_numpy(X))
    twin = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2, max_iter=1,
                                         random_state=0).fit(X)
    np.testing.assert_array_equal(est.components_, twin.components_)
    assert (est.transform(torch.from_numpy(X)) != twin.transform(X)).nnz == 0


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", "meta", "banana"])
def test_a_wrong_device_names_the_options(device):
    est = SparseAutoencoder(n_components=8, k=2, max_iter=1, device=device)
    with pytest.raises(ValueError, match=r"device=.*(is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
                                         r"|not available)"):
        est.fit(X)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "auto"])
def test_accepted_devices(device):
    est = SparseAutoencoder(n_components=8, k=2, max_iter=1, device=device, random_state=0).fit(X)
    assert est.transform(X).shape == (len(X), 8)


def test_unavailable_accelerators_are_named():
    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"device='{device}' was requested but CUDA is not available"):
            SparseAutoencoder(n_components=8, k=2, max_iter=1, device=device).fit(X)


def test_inverse_transform_level_argument():
    est = HierarchicalSparseAutoencoder(architecture="tree", n_parents=3, n_children=2, n_levels=3, k=2,
                                        **COMMON).fit(X)
    Z = est.transform(X)
    starts = np.cumsum([0, *[c.shape[0] for c in est.components_by_level_]])
    for level in range(3):
        block = Z[:, starts[level]:starts[level + 1]]
        expected = block @ est.components_by_level_[level] + est.intercept_by_level_[level]
        np.testing.assert_allclose(est.inverse_transform(Z, level=level), expected)
    np.testing.assert_array_equal(est.inverse_transform(Z, level=-1), est.inverse_transform(Z))
    with pytest.raises(ValueError, match=r"level=3 is not a level of this model; use an int in \[-3, 2\]"):
        est.inverse_transform(Z, level=3)


def test_transform_shows_a_bar_only_when_verbose(capfd):
    est = SparseAutoencoder(n_components=24, k=3, max_iter=1, random_state=0).fit(X)
    capfd.readouterr()
    est.transform(X)
    assert capfd.readouterr().err == ""  # quiet by default, like scikit-learn
    est.set_params(verbose=1).transform(X)
    err = capfd.readouterr().err
    assert "encode" in err and "/1.50k" in err and "row/s" in err  # rows of X, with a rate
