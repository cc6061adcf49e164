"""sklearn_hsae.io: bitwise round trips, the file layout, refusals, and the SAELens export."""

import ast
import inspect
import json
import os
import pickle
import resource

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from model_files import CONFIG, WEIGHTS, forge, forge_header, read_model, split_safetensors
from safetensors.numpy import load_file
from sklearn.exceptions import NotFittedError

import sklearn_hsae.io._checks
import sklearn_hsae.io._json
import sklearn_hsae.io._saelens
from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder, io
from sklearn_hsae._config import MODEL_CONFIGS
from sklearn_hsae.io._json import coerce
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io import InvalidModelFileError, export_saelens, load, save

HSAE = dict(n_parents=8, n_children=3, subspace_dim=2, k=2, max_iter=2, batch_size=64)
SAE = dict(n_components=12, k=3, max_iter=2, batch_size=64)
MODELS = {
    "hsae-global-f32-names": lambda: HierarchicalSparseAutoencoder(**HSAE, random_state=0),
    "hsae-unit-f64": lambda: HierarchicalSparseAutoencoder(
        **HSAE, normalize="unit", dtype="float64", random_state=1
    ),
    "hsae-none-randomstate": lambda: HierarchicalSparseAutoencoder(
        **HSAE, normalize=None, random_state=np.random.RandomState(7)
    ),
    "sae-topk": lambda: SparseAutoencoder(**SAE, random_state=0),
    "sae-batchtopk-matryoshka-unit": lambda: SparseAutoencoder(
        **SAE, activation="batchtopk", matryoshka_prefixes=[3, 6], normalize="unit", random_state=0
    ),
}


@pytest.fixture(scope="module")
def X():
    X, *_ = make_hierarchical_activations(
        n_samples=400,
        n_features=16,
        n_parents=6,
        n_children=3,
        subspace_dim=2,
        n_active=2,
        random_state=0,
    )
    return X * 3.0 + 0.5  # not already unit-scaled, so folding the scale matters


def inputs(est, X):
    """X as the estimator saw it in fit (a frame with names for the -names model)."""
    if hasattr(est, "feature_names_in_"):
        return pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    return X


@pytest.fixture(scope="module")
def fitted(X):
    models = {}
    for name, make in MODELS.items():
        est = make()
        data = pd.DataFrame(X, columns=[f"f{i}" for i in range(16)]) if "names" in name else X
        models[name] = est.fit(data)
    return models


def twin(est):
    return pickle.loads(pickle.dumps(est))


def public_fitted(est):
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def assert_same_params(a, b):
    pa, pb = a.get_params(), b.get_params()
    ra, rb = pa.pop("random_state"), pb.pop("random_state")
    assert pa == pb
    if isinstance(ra, np.random.RandomState):
        for x, y in zip(ra.get_state(), rb.get_state(), strict=True):
            np.testing.assert_array_equal(x, y)
    else:
        assert ra == rb


# ------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_bitwise(name, fitted, X, tmp_path):
    est = fitted[name]
    save(est, tmp_path)
    loaded = load(tmp_path)
    data = inputs(est, X)
    a, b = est.transform(data), loaded.transform(data)
    assert a.dtype == b.dtype == X.dtype and a.nnz > 0
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    np.testing.assert_array_equal(loaded.inverse_transform(a), est.inverse_transform(a))
    assert loaded.score(data) == est.score(data)
    assert public_fitted(loaded).keys() == public_fitted(est).keys()
    for key, value in public_fitted(est).items():
        got = getattr(loaded, key)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype, key
            np.testing.assert_array_equal(got, value)
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            assert type(got) is list and len(got) == len(value), key
            for g, v in zip(got, value):  # one array per level
                assert g.dtype == v.dtype, key
                np.testing.assert_array_equal(g, v)
        else:
            assert got == value and type(got) is type(value), key
    assert_same_params(loaded, est)
    assert loaded._config == est._config
    for key, value in est._model_state.items():
        assert loaded._model_state[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded._model_state[key], value)


def test_file_layout(fitted, tmp_path):
    est = fitted["hsae-global-f32-names"]
    (tmp_path / "notes.txt").write_text("kept")
    save(est, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, WEIGHTS, "notes.txt"]
    doc, tensors = read_model(tmp_path)
    assert list(doc) == [
        "format",
        "format_version",
        "package_version",
        "estimator",
        "params",
        "config",
        "fitted",
        "sha256",
    ]
    assert (doc["format"], doc["format_version"]) == ("sklearn_hsae", 1)
    assert doc["estimator"] == "HierarchicalSparseAutoencoder"
    assert doc["params"] == est.get_params()
    assert doc["config"]["type"] == "RoutedConfig"
    assert doc["config"]["fields"]["n_parents"] == 8 and doc["config"]["fields"]["aux_k"] == 8
    assert doc["fitted"]["feature_names_in_"] == [f"f{i}" for i in range(16)]
    assert doc["fitted"]["scale_"] == est.scale_ and doc["fitted"]["n_steps_"] == 2 * 7
    fitted_arrays = {"parent_components_", "child_components_", "child_parent_", "intercept_"}
    fitted_arrays |= {f"{n}.{i}" for n in ("components_by_level_", "parent_index_by_level_") for i in (0, 1)}
    assert set(tensors) == set(est._model_state) | {f"fitted.{n}" for n in fitted_arrays}
    assert (
        tensors["W_down"].shape == (8, 2, 16) and tensors["fitted.child_parent_"].dtype == np.int64
    )
    assert set(doc["sha256"]) == set(tensors)
    header, _ = split_safetensors((tmp_path / WEIGHTS).read_bytes())
    assert header["__metadata__"]["format"] == "sklearn_hsae"


def test_io_modules_use_no_pickle():
    """No unpickler is imported or called by the io modules (checked on their syntax tree)."""
    unpicklers = {"pickle", "joblib", "cloudpickle", "dill", "marshal", "shelve"}
    for module in (io, sklearn_hsae.io._json, sklearn_hsae.io._checks, sklearn_hsae.io._saelens):
        tree = ast.parse(inspect.getsource(module))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        imported |= {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        assert not imported & unpicklers, module.__name__
        assert not calls & {"torch.load", "np.load", "eval", "exec"}, module.__name__


def test_partial_fit_after_load_starts_a_fresh_optimizer(X, tmp_path):
    est = HierarchicalSparseAutoencoder(**{**HSAE, "max_iter": 3}, random_state=0).fit(X)
    save(est, tmp_path)
    loaded, pickled = load(tmp_path), twin(est)
    assert not hasattr(loaded, "_trainer_state") and hasattr(pickled, "_trainer_state")
    before = est.score(X)
    for part in np.array_split(X, 4):
        loaded.partial_fit(part)
        pickled.partial_fit(part)
        # Zero Adam moments cost little: each chunk's loss within 5% of the resumed run's.
        assert loaded.loss_curve_[-1] == pytest.approx(pickled.loss_curve_[-1], rel=0.05)
    assert loaded.n_steps_ == pickled.n_steps_ == est.n_steps_ + 4 * 2
    assert loaded.n_iter_ == est.n_iter_ + 4
    assert loaded.score(X) > before


def test_load_overrides_a_saved_cuda_device(fitted, X, tmp_path):
    """No GPU here: a model saved with device="cuda" is simulated by the parameter alone,
    which is all a file (or pickle) of a CUDA-trained estimator holds about its device."""
    est = twin(fitted["sae-topk"]).set_params(device="cuda")
    save(est, tmp_path)
    assert load(tmp_path).device == "cuda"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load(tmp_path).transform(X)
    cpu = load(tmp_path, device="cpu")
    assert cpu.device == "cpu"
    assert (cpu.transform(X) != fitted["sae-topk"].transform(X)).nnz == 0


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_of_a_cuda_estimator_transforms_on_cpu(fitted, X, tmp_path, dump):
    """Pickles hold numpy only; a CUDA estimator is simulated by its device parameter."""
    est = fitted["hsae-global-f32-names"]
    on_cuda = twin(est).set_params(device="cuda")
    if dump == "pickle":
        restored = pickle.loads(pickle.dumps(on_cuda))
    else:
        joblib.dump(on_cuda, tmp_path / "model.joblib")
        restored = joblib.load(tmp_path / "model.joblib")
    data = inputs(est, X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            restored.transform(data)
    restored.set_params(device="cpu")
    assert (restored.transform(data) != est.transform(data)).nnz == 0
    expected = twin(est).partial_fit(data)
    restored.partial_fit(data)  # the numpy optimizer state moves to the new device
    for key, value in expected._model_state.items():
        np.testing.assert_array_equal(restored._model_state[key], value)


# ------------------------------------------------------------------ save
def test_save_refuses_what_it_cannot_store(fitted, tmp_path):
    with pytest.raises(TypeError, match="save\\(\\) stores"):
        save(object(), tmp_path)
    with pytest.raises(NotFittedError):
        save(SparseAutoencoder(), tmp_path)
    changed = twin(fitted["hsae-global-f32-names"]).set_params(n_parents=9)
    with pytest.raises(ValueError, match="n_parents=8 differs from 9"):
        save(changed, tmp_path)
    broken = twin(fitted["sae-topk"])
    broken._model_state["W_enc"][0, 0] = np.nan
    with pytest.raises(ValueError, match="'W_enc' holds NaN"):
        save(broken, tmp_path)
    with pytest.raises(ValueError, match="parameter device of type object"):
        save(twin(fitted["sae-topk"]).set_params(device=object()), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_parameters_that_do_not_shape_the_model_may_change_after_fit(fitted, X, tmp_path):
    est = twin(fitted["hsae-global-f32-names"]).set_params(batch_size=4096, verbose=1, max_iter=9)
    save(est, tmp_path)
    assert load(tmp_path).get_params()["batch_size"] == 4096


# ------------------------------------------------------------------ load
def _edit(tmp_path, fitted, name, change):
    """Save fitted[name], apply change(doc, tensors) as a hostile author, re-sign."""
    save(fitted[name], tmp_path)
    doc, tensors = read_model(tmp_path)
    change(doc, tensors)
    forge(tmp_path, doc, tensors)
    return tmp_path


def _set(path, value):
    def change(doc, tensors):
        *head, last = path.split(".")
        node = doc
        for key in head:
            node = node[key]
        node[last] = value

    return change


EDITS = {
    "format_version": (_set("format_version", 2), "format_version 2 is newer than this"),
    "class name": (_set("estimator", "LinearRegression"), "'LinearRegression' is not one of"),
    "params k=0": (_set("params.k", 0), "params: The 'k' parameter"),
    "params k > n_parents": (_set("params.k", 9), "k=9 active parents cannot exceed"),
    "params vs config": (_set("params.n_parents", 7), "n_parents=8 differs from 7"),
    "extra param": (_set("params.colour", "red"), "unexpected key\\(s\\) \\['colour'\\]"),
    "unknown device": (_set("params.device", "quantum"), "params: .*quantum"),
    "config type": (_set("config.type", "FlatConfig"), "type 'FlatConfig' is not the RoutedConfig"),
    "data-dependent field": (_set("config.fields.dead_tokens", -1), "dead_tokens=-1 must lie"),
    "negative n_steps_": (_set("fitted.n_steps_", -3), "n_steps_: must be >= 0"),
    "transposed W_enc": (
        lambda d, t: t.update(W_enc=np.ascontiguousarray(t["W_enc"].T)),
        "'W_enc': is F32 \\[16, 8\\], expected F32 \\[8, 16\\]",
    ),
    "float64 b_dec": (
        lambda d, t: t.update(b_dec=t["b_dec"].astype(np.float64)),
        "'b_dec': is F64",
    ),
    "NaN": (lambda d, t: t["b_enc"].__setitem__(3, np.nan), "'b_enc': holds 1 NaN"),
    "missing tensor": (lambda d, t: t.pop("D_child"), "missing \\['D_child'\\]"),
    "child index out of range": (
        lambda d, t: t["fitted.child_parent_"].__setitem__(0, 8),
        "child_parent_': values span \\[0, 8\\], outside the valid range \\[0, 8\\)",
    ),
    "negative counter": (
        lambda d, t: t["tokens_since_fired"].__setitem__(0, -1),
        "'tokens_since_fired': values span \\[-1, .*\\[0, inf\\)",
    ),
    "inconsistent fitted array": (
        lambda d, t: t["fitted.parent_components_"].__imul__(2),
        "parent_components_': disagrees with the values the weights imply",
    ),
    "fitted scalar": (_set("fitted.colour_", 1), "unexpected key\\(s\\) \\['colour_'\\]"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_load_names_the_problem(edit, fitted, tmp_path):
    change, message = EDITS[edit]
    path = _edit(tmp_path, fitted, "hsae-global-f32-names", change)
    with pytest.raises(InvalidModelFileError, match=message):
        load(path)


def test_checksums_catch_accidental_damage(fitted, tmp_path):
    save(fitted["sae-topk"], tmp_path)
    config = (tmp_path / CONFIG).read_bytes()
    (tmp_path / CONFIG).write_bytes(config.replace(b'"verbose": 0', b'"verbose": 1'))
    with pytest.raises(InvalidModelFileError, match="config.json: its SHA-256 differs"):
        load(tmp_path)
    save(fitted["sae-topk"], tmp_path)
    blob = bytearray((tmp_path / WEIGHTS).read_bytes())
    blob[-3] ^= 0x01  # a low mantissa bit of the last tensor
    (tmp_path / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(InvalidModelFileError, match="SHA-256 differs from the one config.json"):
        load(tmp_path)


def test_missing_and_odd_files(fitted, tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere")
    save(fitted["sae-topk"], tmp_path)
    (tmp_path / WEIGHTS).unlink()
    with pytest.raises(InvalidModelFileError, match="model.safetensors: the file is missing"):
        load(tmp_path)
    with pytest.raises(InvalidModelFileError, match="is not a directory"):
        load(tmp_path / CONFIG)
    save(fitted["sae-topk"], tmp_path)
    (tmp_path / CONFIG).unlink()
    (tmp_path / CONFIG).mkdir()
    with pytest.raises(InvalidModelFileError, match="config.json: is not a regular file"):
        load(tmp_path)


def test_an_oversized_config_is_refused_unread(fitted, tmp_path, monkeypatch):
    save(fitted["sae-topk"], tmp_path)
    size = (tmp_path / CONFIG).stat().st_size
    monkeypatch.setattr(io, "MAX_JSON_BYTES", size - 1)
    with pytest.raises(InvalidModelFileError, match=f"larger than the {size - 1}-byte limit"):
        load(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_is_refused_instead_of_blocking(fitted, tmp_path):
    save(fitted["sae-topk"], tmp_path)
    (tmp_path / CONFIG).unlink()
    os.mkfifo(tmp_path / CONFIG)  # opening it for reading would wait for a writer forever
    with pytest.raises(InvalidModelFileError, match="not a regular file"):
        load(tmp_path)


def test_giant_size_claims_are_refused_before_allocating(fitted, tmp_path):
    save(fitted["sae-topk"], tmp_path)
    config = (tmp_path / CONFIG).read_bytes()
    header, data = split_safetensors((tmp_path / WEIGHTS).read_bytes())
    header.pop("__metadata__")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    claims = {  # 4 TiB claimed by a ~2 kB file, consistent and inconsistent with its offsets
        "consistent": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]},
        "short": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 768]},
    }
    for claim, message in zip(
        claims.values(), ["gap or overlap", "needs 4398046511104"], strict=True
    ):
        forge_header(tmp_path, config, {**header, "W_enc": claim}, data)
        with pytest.raises(InvalidModelFileError, match=message):
            load(tmp_path)
    (tmp_path / WEIGHTS).write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(InvalidModelFileError, match="header claims 9223372036854775808 bytes"):
        load(tmp_path)
    save(fitted["sae-topk"], tmp_path)
    doc, tensors = read_model(tmp_path)
    doc["params"]["n_components"] = doc["config"]["fields"]["n_latents"] = 2**40
    forge(tmp_path, doc, tensors)  # a config that implies a 2**40-wide dictionary
    with pytest.raises(
        InvalidModelFileError,
        match="'W_enc': is F32 \\[12, 16\\], expected F32 \\[1099511627776, 16\\]",
    ):
        load(tmp_path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 64


# ------------------------------------------------------- hooks for new models
@pytest.mark.parametrize("name", MODELS)
def test_every_integer_tensor_declares_its_range(name, fitted):
    est = fitted[name]
    meta = est._new_model(est._config, torch.device("meta"))
    integer = {n for n, t in meta.state_dict().items() if not t.is_floating_point()}
    assert integer and integer <= meta.integer_ranges().keys()
    integer_fitted = {
        k
        for k, v in public_fitted(est).items()
        if isinstance(v, np.ndarray) and v.dtype.kind in "iub"
    }
    assert integer_fitted <= est._integer_ranges().keys()


ARCHITECTURES = sorted(
    HierarchicalSparseAutoencoder._parameter_constraints["architecture"][0].options
)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_round_trips(architecture, X, tmp_path):
    """Every architecture the estimator accepts, with no code in io naming it."""
    est = HierarchicalSparseAutoencoder(**HSAE, architecture=architecture, random_state=0).fit(X)
    save(est, tmp_path)
    loaded = load(tmp_path)
    assert (loaded.transform(X) != est.transform(X)).nnz == 0
    for key, value in est._model_state.items():
        np.testing.assert_array_equal(loaded._model_state[key], value)


def test_lists_of_arrays_and_their_index_ranges_persist(fitted, X, tmp_path, monkeypatch):
    """A per-level fitted attribute (list of arrays, as a multi-level model may export)
    is stored item by item and range-checked through the estimator's hook."""
    cls = HierarchicalSparseAutoencoder
    export = cls._export_fitted

    def export_with_levels(self, model, reuse=False):
        export(self, model, reuse)
        self.level_parent_ = [np.full(3, -1), np.arange(self.n_parents) % 3]

    monkeypatch.setattr(cls, "_export_fitted", export_with_levels)
    ranges = cls._integer_ranges
    monkeypatch.setattr(
        cls, "_integer_ranges", lambda self: {**ranges(self), "level_parent_": (-1, 3)}
    )
    est = cls(**HSAE, random_state=0).fit(X)
    save(est, tmp_path)
    assert {"fitted.level_parent_.0", "fitted.level_parent_.1"} <= set(read_model(tmp_path)[1])
    loaded = load(tmp_path)
    assert isinstance(loaded.level_parent_, list) and len(loaded.level_parent_) == 2
    np.testing.assert_array_equal(loaded.level_parent_[1], np.arange(8) % 3)
    doc, tensors = read_model(tmp_path)
    tensors["fitted.level_parent_.1"][2] = 3  # one past the last valid parent
    forge(tmp_path, doc, tensors)
    with pytest.raises(InvalidModelFileError, match="level_parent_.1'.*valid range \\[-1, 3\\)"):
        load(tmp_path)


def test_integer_tensors_without_a_declared_range_are_neither_saved_nor_loaded(
    fitted, tmp_path, monkeypatch
):
    from sklearn_hsae._models import FlatSAE

    save(fitted["sae-topk"], tmp_path)
    monkeypatch.setattr(FlatSAE, "integer_ranges", lambda self: {})
    with pytest.raises(NotImplementedError, match="tokens_since_fired"):
        save(fitted["sae-topk"], tmp_path / "new")
    with pytest.raises(InvalidModelFileError, match="without a declared valid range"):
        load(tmp_path)


@pytest.mark.parametrize("cls", MODEL_CONFIGS.values(), ids=list(MODEL_CONFIGS))
def test_every_model_config_field_type_is_checkable(cls):
    import typing

    for field, hint in typing.get_type_hints(cls).items():
        with pytest.raises(InvalidModelFileError, match=field):
            coerce({"not": "a value"}, hint, field)  # NotImplementedError would mean unchecked


# --------------------------------------------------------------- SAELens
def _saelens_encode(cfg, w, X):
    """SAELens 6.x TopK / JumpReLU encode, as read from sae_lens/saes/*.py, in numpy."""
    x = X.astype(np.float64)
    if cfg["normalize_activations"] == "constant_norm_rescale":
        x = x * np.sqrt(cfg["d_in"]) / np.linalg.norm(x, axis=1, keepdims=True)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "topk":
        top = np.argsort(-pre, axis=1, kind="stable")[:, : cfg["k"]]
        acts = np.zeros_like(pre)
        np.put_along_axis(acts, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
        return acts
    return np.maximum(pre, 0) * (pre > w["threshold"])


def _our_top_level(est, X):
    return (
        est.encode(X).parent if isinstance(est, HierarchicalSparseAutoencoder) else est.transform(X)
    )


@pytest.mark.parametrize("name", [n for n in MODELS if "names" not in n])
def test_export_saelens_layout_and_encoding(name, fitted, X, tmp_path):
    est = fitted[name]
    kwargs = {"center_writing_weights": False}
    metadata = {"hook_name": "blocks.0.hook_resid_post", "model_from_pretrained_kwargs": kwargs}
    export_saelens(est, tmp_path, metadata=metadata)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    w = load_file(tmp_path / "sae_weights.safetensors")
    batchtopk = getattr(est, "activation", "topk") == "batchtopk"
    d_sae = est._config.n_parents if hasattr(est._config, "n_parents") else est.n_components
    assert cfg["architecture"] == ("jumprelu" if batchtopk else "topk")
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (16, d_sae, est.dtype)
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    assert cfg["metadata"]["model_from_pretrained_kwargs"] == kwargs
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    assert w["W_enc"].shape == (16, d_sae) and w["W_dec"].shape == (d_sae, 16)
    assert all(a.dtype == np.dtype(est.dtype) for a in w.values())
    ours = _our_top_level(est, X).toarray()
    theirs = _saelens_encode(cfg, w, X)
    np.testing.assert_array_equal(theirs != 0, ours != 0)
    if est.normalize == "unit":  # SAELens reports unit-norm units, we report input units
        ours = ours / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def test_export_saelens_refuses_levels_without_a_flat_form(fitted, tmp_path):
    with pytest.raises(ValueError, match="level='child' has no SAELens form"):
        export_saelens(fitted["hsae-unit-f64"], tmp_path, level="child")
    with pytest.raises(ValueError, match="metadata must hold JSON values only"):
        export_saelens(fitted["sae-topk"], tmp_path, metadata={"when": object()})
    with pytest.raises(TypeError, match="export_saelens\\(\\) exports"):
        export_saelens(object(), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)
def test_saelens_reads_our_export(tmp_path):
    """Needs sae_lens (the [saelens] extra), which `make test` does not install."""
    sae_lens = pytest.importorskip("sae_lens")
    X, *_ = make_hierarchical_activations(
        n_samples=3000,
        n_features=64,
        n_parents=32,
        n_children=4,
        subspace_dim=3,
        n_active=4,
        random_state=0,
    )
    X = X * 37.0 + 5.0  # raw-looking activations: scale and offset
    models = {
        "hsae-global": HierarchicalSparseAutoencoder(
            n_parents=32, n_children=4, subspace_dim=3, k=4
        ),
        "hsae-unit": HierarchicalSparseAutoencoder(
            n_parents=32, n_children=4, subspace_dim=3, k=4, normalize="unit"
        ),
        "sae-topk-f64": SparseAutoencoder(n_components=48, k=5, dtype="float64", normalize=None),
        "sae-batchtopk": SparseAutoencoder(
            n_components=48, k=5, activation="batchtopk", matryoshka_prefixes=[12, 24]
        ),
    }
    for name, est in models.items():
        est.set_params(max_iter=3, batch_size=256, random_state=0).fit(X)
        export_saelens(est, tmp_path / name)
        sae = sae_lens.SAE.load_from_disk(tmp_path / name)
        with torch.no_grad():
            x = torch.tensor(X, dtype=sae.dtype)
            acts, recon = sae.encode(x).numpy(), sae(x).numpy()
        ours = _our_top_level(est, X)
        active = [np.flatnonzero(row) for row in acts]
        mismatched = sum(
            not np.array_equal(a, ours.indices[ours.indptr[i] : ours.indptr[i + 1]])
            for i, a in enumerate(active)
        )
        assert mismatched == 0, name
        dense = ours.toarray()
        if est.normalize == "unit":
            dense = dense / np.linalg.norm(X, axis=1, keepdims=True)
        np.testing.assert_allclose(acts, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())
        # SAELens reconstructs from this level alone: for the H-SAE the parents-only x_hat.
        if isinstance(est, HierarchicalSparseAutoencoder):
            expected = ours @ est.parent_components_ + est.intercept_
        else:
            expected = est.inverse_transform(ours)
        np.testing.assert_allclose(recon, expected, rtol=1e-4, atol=1e-4 * np.abs(X).max())


# -------------------------------------------------------------- properties
def _random_estimator(rng):
    common = dict(
        max_iter=1,
        batch_size=int(rng.integers(1, 17)),
        random_state=int(rng.integers(1000)),
        dtype=str(rng.choice(["float32", "float64"])),
        normalize=rng.choice(["global", "unit", None]),
    )
    if rng.random() < 0.5:
        n_parents = int(rng.integers(1, 7))
        return HierarchicalSparseAutoencoder(
            n_parents,
            n_children=int(rng.integers(1, 5)),
            subspace_dim=int(rng.integers(1, 5)),
            k=int(rng.integers(1, n_parents + 1)),
            **common,
        )
    n = int(rng.integers(2, 11))
    prefixes = [int(rng.integers(1, n))] if rng.random() < 0.3 else None
    return SparseAutoencoder(
        n,
        k=int(rng.integers(1, n + 1)),
        matryoshka_prefixes=prefixes,
        activation=str(rng.choice(["topk", "batchtopk"])),
        **common,
    )


def test_random_valid_sizes_keep_shapes_dtypes_and_round_trip(tmp_path):
    """Seeded random sizes: transform / inverse_transform shapes and dtypes, bitwise reload."""
    rng = np.random.default_rng(2024)
    for trial in range(24):
        est = _random_estimator(rng)
        n_samples, n_features = int(rng.integers(1, 40)), int(rng.integers(1, 10))
        x_dtype = rng.choice([np.float32, np.float64])
        X = (rng.normal(size=(n_samples, n_features)) * rng.uniform(0.1, 50)).astype(x_dtype)
        est.fit(X)
        Z = est.transform(X)
        width = sum(est._level_widths())
        assert Z.shape == (n_samples, width) and Z.dtype == x_dtype, (trial, est)
        assert np.isfinite(Z.data).all()
        R = est.inverse_transform(Z)
        assert R.shape == X.shape and R.dtype == x_dtype and np.isfinite(R).all(), (trial, est)
        save(est, tmp_path / str(trial))
        Z2 = load(tmp_path / str(trial)).transform(X)
        assert Z2.dtype == Z.dtype and (Z2 != Z).nnz == 0, (trial, est)
        np.testing.assert_array_equal(Z2.indices, Z.indices)


def test_checkpoint_dir_never_travels_in_a_model_file(tmp_path):
    X = np.random.RandomState(0).rand(40, 5)
    est = SparseAutoencoder(n_components=6, k=2, max_iter=1, checkpoint_dir=str(tmp_path / "ck")).fit(X)
    save(est, tmp_path / "model")
    doc = json.loads((tmp_path / "model" / CONFIG).read_text())
    assert doc["params"]["checkpoint_dir"] is None
    assert load(tmp_path / "model").checkpoint_dir is None
