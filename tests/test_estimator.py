"""HierarchicalSparseAutoencoder: the scikit-learn contract, inputs, outputs, state."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import check_estimator

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._config import TrainConfig, auto_learning_rate
from sklearn_hsae.datasets import make_hierarchical_activations

SMALL = dict(n_parents=8, n_children=3, subspace_dim=2, k=2, max_iter=3, batch_size=16)

# Checks scikit-learn runs on its own estimators but check_estimator does not.
EXTRA_CHECKS = [
    ec.check_param_validation,
    ec.check_set_output_transform,
    ec.check_set_output_transform_pandas,
    ec.check_global_output_transform_pandas,
    ec.check_set_output_transform_polars,
    ec.check_global_set_output_transform_polars,
    ec.check_transformer_get_feature_names_out,
    ec.check_transformer_get_feature_names_out_pandas,
    ec.check_get_feature_names_out_error,
    ec.check_inplace_ensure_writeable,
    ec.check_dataframe_column_names_consistency,
    ec.check_n_features_in_after_fitting,
]


@pytest.fixture(scope="module")
def data():
    X, *_ = make_hierarchical_activations(n_samples=600, n_features=16, n_parents=6,
                                          n_children=3, subspace_dim=2, n_active=2,
                                          random_state=0)
    return X


@pytest.fixture(scope="module")
def fitted(data):
    return HierarchicalSparseAutoencoder(
        n_parents=6, n_children=3, subspace_dim=2, k=2, max_iter=5, batch_size=64,
        learning_rate=1e-2, random_state=0,  # 50 steps: above the "auto" cap of 5e-3
    ).fit(data)


@pytest.mark.parametrize("normalize", ["global", "unit", None])
def test_check_estimator_passes_every_check(normalize):
    est = HierarchicalSparseAutoencoder(**SMALL, normalize=normalize)
    results = check_estimator(est, on_fail=None)
    bad = [(r["check_name"], r["status"], r["exception"]) for r in results if r["status"] != "passed"]
    assert not bad
    assert len(results) >= 45


# The dataframe checks mix frames and arrays on purpose; sklearn warns about it.
@pytest.mark.filterwarnings("ignore:X (has|does not have valid) feature names:UserWarning")
@pytest.mark.parametrize("check", EXTRA_CHECKS, ids=lambda c: c.__name__)
def test_extra_sklearn_checks(check):
    check("HierarchicalSparseAutoencoder", HierarchicalSparseAutoencoder(**SMALL))


@pytest.mark.parametrize("normalize", ["global", "unit"])
def test_check_estimator_passes_for_the_nested_architecture(normalize):
    est = HierarchicalSparseAutoencoder(**SMALL, architecture="nested", n_levels=3, normalize=normalize)
    results = check_estimator(est, on_fail=None)
    bad = [(r["check_name"], r["status"], r["exception"]) for r in results if r["status"] != "passed"]
    assert not bad
    assert len(results) >= 45


def test_check_estimator_with_default_parameters():
    results = check_estimator(HierarchicalSparseAutoencoder(max_iter=1), on_fail=None)
    assert [r["check_name"] for r in results if r["status"] != "passed"] == []


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "infinity"),
        (np.empty((0, 3)), ValueError, "0 sample"),
        (np.empty((3, 0)), ValueError, "0 feature"),
        (np.arange(5.0), ValueError, "Expected 2D array"),
        (np.zeros((2, 3, 4)), ValueError, "dim 3"),
        (np.array([["1.5", "2"], ["3", "4"]]), TypeError, "text is not accepted"),
        (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), TypeError, "strings"),
        ([["1.0", "2.0"]], TypeError, "text is not accepted"),
        (np.ones((3, 2)) + 1j, ValueError, "Complex data not supported"),
        (sp.csr_matrix(np.eye(3)), TypeError, "[Ss]parse"),
    ],
    ids=["nan", "inf", "empty", "no-features", "1d", "3d", "str", "object-str",
         "list-str", "complex", "sparse"],
)
def test_bad_input_is_refused_with_a_clear_message(X, error, match):
    est = HierarchicalSparseAutoencoder(**SMALL)
    with pytest.raises(error, match=match):
        est.fit(X)


def test_bad_input_at_transform_time(fitted, data):
    with pytest.raises(ValueError, match="X has 15 features, but HierarchicalSparseAutoencoder is expecting 16"):
        fitted.transform(data[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(np.full((2, 16), np.nan))
    with pytest.raises(TypeError, match="[Ss]parse"):
        fitted.transform(sp.csr_matrix(data[:3]))
    with pytest.raises(ValueError, match="produces 24 code columns"):
        fitted.inverse_transform(np.zeros((2, 5)))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(k=9, n_parents=8), "k=9 active parents cannot exceed n_parents=8"),
        (dict(n_parents=0), "'n_parents' parameter"),
        (dict(n_children=-1), "'n_children' parameter"),
        (dict(subspace_dim=0), "'subspace_dim' parameter"),
        (dict(k=0), "'k' parameter"),
        (dict(batch_size=0), "'batch_size' parameter"),
        (dict(learning_rate=-1.0), "'learning_rate' parameter"),
        (dict(normalize="l2"), "'normalize' parameter"),
        (dict(architecture="flat"), "'architecture' parameter"),
        (dict(dtype="float16"), "'dtype' parameter"),
    ],
)
def test_bad_parameters_are_refused(params, match, data):
    with pytest.raises(ValueError, match=match):
        HierarchicalSparseAutoencoder(**{**SMALL, **params}).fit(data)


def test_unavailable_device_is_refused(data):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        HierarchicalSparseAutoencoder(**SMALL, device="cuda").fit(data)


def test_not_fitted():
    est = HierarchicalSparseAutoencoder()
    for method in (est.transform, est.encode, est.score, est.inverse_transform):
        with pytest.raises(NotFittedError):
            method(np.ones((2, 3)))


# ------------------------------------------------------------------ outputs
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_are_sparse_consistent_and_keep_the_dtype(fitted, data, dtype):
    X = data.astype(dtype)
    codes = fitted.encode(X)
    Z = fitted.transform(X)
    assert sp.isspmatrix_csr(Z) and Z.dtype == dtype and Z.has_canonical_format
    assert codes.parent.shape == (600, 6) and codes.child.shape == (600, 18)
    assert len(codes.levels) == 2 and codes.levels[0] is codes.parent
    np.testing.assert_array_equal(Z.toarray(), sp.hstack([codes.parent, codes.child]).toarray())
    parent_l0 = codes.parent.getnnz(axis=1)
    assert parent_l0.max() <= 2 and (codes.parent.data > 0).all()
    # A child is active only under an active parent, at most one child per parent.
    child = codes.child.tocoo()
    owner = fitted.child_parent_[child.col]
    assert np.all(codes.parent[child.row, owner].A1 > 0)
    per_parent = sp.csr_matrix((np.ones(child.nnz), (child.row, owner)), shape=(600, 6))
    assert per_parent.max() <= 1
    assert fitted.inverse_transform(Z).dtype == dtype


def test_reconstruction_identities(fitted, data):
    Z = fitted.transform(data)
    X_hat = fitted.inverse_transform(Z)
    np.testing.assert_allclose(X_hat, fitted.inverse_transform(Z.toarray()), rtol=1e-6, atol=1e-6)
    fvu = ((data - X_hat) ** 2).sum() / ((data - data.mean(0)) ** 2).sum()
    assert fitted.score(data) == pytest.approx(1 - fvu, rel=1e-5)
    codes = fitted.encode(data)
    manual = (codes.parent @ fitted.parent_components_ + codes.child @ fitted.child_components_
              + fitted.intercept_)
    np.testing.assert_allclose(X_hat, manual, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fitted.parent_components_, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fitted.child_components_, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(fitted.child_parent_, np.repeat(np.arange(6), 3))
    assert fitted.score(data) > 0.5


def test_unit_normalization_is_scale_free(data):
    est = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                        max_iter=2, normalize="unit", random_state=0).fit(data)
    np.testing.assert_array_equal(est.intercept_, 0)
    Z = est.transform(data)
    np.testing.assert_allclose(est.transform(7.5 * data).toarray(), 7.5 * Z.toarray(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.inverse_transform(7.5 * Z), 7.5 * est.inverse_transform(Z),
                               rtol=1e-5, atol=1e-6)


def test_global_scale_sets_mean_squared_norm_to_d(fitted, data):
    assert np.mean(np.sum((fitted.scale_ * data) ** 2, axis=1)) == pytest.approx(16, rel=1e-6)


def test_feature_names(fitted):
    names = fitted.get_feature_names_out()
    assert names.dtype == object and len(names) == 6 * 4
    assert names[0] == "hierarchicalsparseautoencoder_parent0"
    assert names[6] == "hierarchicalsparseautoencoder_child0.0"
    assert names[-1] == "hierarchicalsparseautoencoder_child5.2"


# -------------------------------------------------------------- state, RNG
def _fit(data, **kw):
    params = dict(n_parents=6, n_children=3, subspace_dim=2, k=2, max_iter=3, batch_size=64,
                  random_state=0)
    return HierarchicalSparseAutoencoder(**{**params, **kw}).fit(data)


def _weights(est):
    return {k: v.copy() for k, v in est._model_state.items()}


def test_same_seed_gives_bitwise_identical_fits(data):
    a, b, c = _weights(_fit(data)), _weights(_fit(data)), _weights(_fit(data, random_state=1))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[n], c[n]) for n in a)
    assert torch.are_deterministic_algorithms_enabled() is False  # restored after fit
    # ... and torch's NaN fill of new tensors, which the fit switches off for its own work.
    assert torch.utils.deterministic.fill_uninitialized_memory is True


def test_model_state_is_copied_from_the_live_trainer_when_asked(data):
    """partial_fit copies no weights; the numpy state read afterwards (save, pickle,
    transform) is the trainer's current one, and a pickle carries it."""
    est = HierarchicalSparseAutoencoder(n_parents=8, n_children=3, k=2, batch_size=200, random_state=0)
    est.partial_fit(data[:400])
    est.partial_fit(data[400:800])
    assert "_model_state_cache" not in est.__dict__
    live = {k: v.detach().numpy() for k, v in est._trainer.model.state_dict().items()}
    state = est._model_state
    assert state.keys() == live.keys()
    for name, value in live.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
        assert not np.shares_memory(state[name], value)  # a copy: later steps leave it alone
    twin = pickle.loads(pickle.dumps(est))
    for name, value in live.items():
        np.testing.assert_array_equal(twin._model_state[name], value, err_msg=name)
    np.testing.assert_array_equal(twin.transform(data[:50]).toarray(), est.transform(data[:50]).toarray())
    with pytest.raises(AttributeError):
        HierarchicalSparseAutoencoder()._model_state


@pytest.mark.parametrize("make", [
    lambda: HierarchicalSparseAutoencoder(n_parents=8, n_children=3, subspace_dim=2, k=2,
                                          batch_size=200, random_state=0),
    lambda: SparseAutoencoder(n_components=12, k=3, activation="batchtopk", batch_size=200,
                              random_state=0),
], ids=["routed", "flat"])
def test_partial_fit_publishes_the_dictionary_when_first_read(make, data):
    """partial_fit builds no dictionary; the first read of any derived attribute exports
    the trainer's current one, equal to an eager export, into the previous array."""
    est = make()
    assert not hasattr(est, "components_")  # unfitted: still an AttributeError
    est.partial_fit(data[:200])
    names = type(est)._derived_attributes
    assert not any(n in est.__dict__ for n in names)
    first, before = est.components_, est.components_.copy()
    assert all(n in est.__dict__ for n in names)  # one read publishes them all
    est.partial_fit(data[200:400])
    est.partial_fit(data[400:600])
    assert "components_" not in est.__dict__
    twin = pickle.loads(pickle.dumps(est))  # a pickle carries the current arrays
    assert "_export_pending" not in vars(twin) and "components_" in vars(twin)
    assert est.components_ is first and not np.array_equal(first, before)  # updated in place
    eager = make().fit(data[:200])
    eager._export_fitted(est._trainer.model)  # the same model exported eagerly
    for copy in (est, twin):
        for name in names:
            a, b = getattr(copy, name), getattr(eager, name)
            for x, y in zip(*([a, b] if isinstance(a, list) else [[a], [b]])):
                np.testing.assert_array_equal(x, y, err_msg=name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_thing_'"):
        est.not_a_thing_


def test_fit_records_progress(data):
    est = _fit(data, max_iter=6)
    assert est.n_iter_ == 6 and est.n_steps_ == 6 * 10
    assert len(est.loss_curve_) == 6
    assert est.loss_curve_[-1] < est.loss_curve_[0]


def test_partial_fit_streams_and_survives_pickling(data):
    est = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                        batch_size=64, random_state=0)
    twin = clone(est)
    for part in np.array_split(data, 3):
        est.partial_fit(part)
        twin = pickle.loads(pickle.dumps(twin.partial_fit(part)))
    assert est.n_iter_ == 3 and est.n_steps_ == 3 * 4
    for name, value in _weights(est).items():
        np.testing.assert_array_equal(value, twin._model_state[name])
    first = est.score(data)
    for _ in range(10):
        est.partial_fit(data)
    assert est.score(data) > first


def test_partial_fit_continues_after_fit(data, fitted):
    est = pickle.loads(pickle.dumps(fitted))
    steps = est.n_steps_
    est.partial_fit(data[:100])
    assert est.n_steps_ == steps + 2
    with pytest.raises(ValueError, match="expecting 16 features"):
        est.partial_fit(data[:10, :4])


def test_warm_start_continues_from_the_previous_solution(data):
    cold = _fit(data, max_iter=3)
    warm = _fit(data, max_iter=3).set_params(warm_start=True)
    before = warm.loss_curve_[-1]
    warm.fit(data)
    assert warm.loss_curve_[0] < cold.loss_curve_[0]
    assert warm.loss_curve_[-1] <= before * 1.05


def test_pickles_hold_no_torch_objects(fitted, data):
    restored = pickle.loads(pickle.dumps(fitted))

    def walk(obj):
        assert not isinstance(obj, (torch.Tensor, torch.nn.Module)), type(obj)
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(fitted.__getstate__())
    np.testing.assert_array_equal(restored.transform(data).toarray(), fitted.transform(data).toarray())


def test_verbose_shows_loss_and_fvu(data, capsys):
    _fit(data, max_iter=1, verbose=1)
    err = capsys.readouterr().err
    assert "loss=" in err and "fvu=" in err and "fit" in err


def _learning_rate(est):
    """The peak rate fit would use: the train config built from the model config."""
    config = est.set_params(k=1)._model_config(n_features=8, n_samples=100, total_steps=10)
    return TrainConfig.from_params(est.learning_rate, config.lr_widths, 10).peaks(len(config.lr_widths))


def test_auto_learning_rate_follows_the_width_law():
    est = HierarchicalSparseAutoencoder(n_parents=4096)
    assert _learning_rate(est) == pytest.approx((8e-4 * 2,))  # 1/sqrt(4096 / 2**14) = 2
    assert _learning_rate(SparseAutoencoder(n_components=2**16)) == pytest.approx((4e-4,))
    assert _learning_rate(HierarchicalSparseAutoencoder(n_parents=24)) == (5e-3,)  # the cap
    assert _learning_rate(HierarchicalSparseAutoencoder(learning_rate=0.01)) == (0.01,)
    # Every level of a tree takes the rate of a flat SAE of its own width: 16 -> 1024 trains
    # its 1024 latents at a flat 1024's rate, not at the capped rate of its 16 parents.
    for arch in ("tree", "nested"):
        tree = HierarchicalSparseAutoencoder(architecture=arch, n_parents=16, n_children=64)
        flat = SparseAutoencoder(n_components=1024)
        assert _learning_rate(tree) == (5e-3, _learning_rate(flat)[0]) == (5e-3, pytest.approx(3.2e-3))
        three = HierarchicalSparseAutoencoder(architecture=arch, n_parents=256, n_children=16, n_levels=3)
        assert _learning_rate(three) == pytest.approx((5e-3, 1.6e-3, 4e-4))  # 256, 4096, 65536 latents
        assert _learning_rate(three.set_params(learning_rate=1e-3)) == (1e-3,) * 3


@pytest.mark.parametrize("architecture", ["tree", "nested"])
def test_trees_train_every_level_at_its_own_rate(architecture):
    """The optimiser's groups are the levels, at their configured peaks; the schedule
    scales them together."""
    from sklearn_hsae._training import learning_rate_at

    X = np.random.RandomState(0).randn(400, 16).astype(np.float32)
    est = HierarchicalSparseAutoencoder(architecture=architecture, n_parents=512, n_children=4, k=2,
                                        max_iter=2, batch_size=100, random_state=0).fit(X)
    trainer = est._trainer
    groups = trainer.optimizer.param_groups
    model_levels = trainer.model.levels
    assert [len(g["params"]) for g in groups][:-1] == [len(list(lv.parameters())) for lv in model_levels][:-1]
    assert sum(len(g["params"]) for g in groups) == len([p for p in trainer.model.parameters() if p.requires_grad])
    peaks = trainer.config.peaks(2)
    assert peaks == pytest.approx((auto_learning_rate(512), auto_learning_rate(2048)))
    last = trainer.step_count - 1  # the rates of the last step taken
    assert [g["lr"] for g in groups] == [learning_rate_at(last, trainer.config, p) for p in peaks]
