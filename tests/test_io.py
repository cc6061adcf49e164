"""sklearn_hsae.io save and load: bitwise round trips, the file layout and refusals."""

import ast
import importlib
import inspect
import json
import os
import pickle
import pkgutil
import resource

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from model_files import (
    CONFIG,
    HSAE,
    MODELS,
    WEIGHTS,
    activations,
    forge,
    forge_header,
    read_model,
    safetensors_bytes_from_text,
    signed_metadata,
    split_safetensors,
    write_raw,
)
from sklearn.exceptions import NotFittedError

import sklearn_hsae.io._load
from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder, io
from sklearn_hsae._config import MODEL_CONFIGS
from sklearn_hsae.io import InvalidModelFileError, load, save
from sklearn_hsae.io._format import BASE_FITTED, FORMAT_VERSION
from sklearn_hsae.io._json import coerce


@pytest.fixture(scope="module")
def X():
    return activations()


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
    assert (doc["format"], doc["format_version"]) == ("sklearn_hsae", 2)
    assert doc["estimator"] == "HierarchicalSparseAutoencoder"
    assert doc["params"] == est.get_params()
    assert doc["config"]["type"] == "RoutedConfig"
    assert doc["config"]["fields"]["n_parents"] == 8 and doc["config"]["fields"]["aux_k"] == 8
    assert doc["fitted"]["feature_names_in_"] == [f"f{i}" for i in range(16)]
    assert doc["fitted"]["scale_"] == est.scale_ and doc["fitted"]["n_steps_"] == 2 * 7
    # Only what the weights do not imply: components_, child_parent_, ... are recomputed.
    assert set(doc["fitted"]) == set(BASE_FITTED) | {"feature_names_in_", "l0_"}
    assert doc["fitted"]["l0_"] == est.l0_ and len(est.l0_) == 2
    assert set(tensors) == set(est._model_state)
    assert tensors["W_down"].shape == (8, 2, 16) and tensors["tokens_since_fired"].dtype == np.int64
    assert set(doc["sha256"]) == set(tensors)
    header, _ = split_safetensors((tmp_path / WEIGHTS).read_bytes())
    assert header["__metadata__"]["format"] == "sklearn_hsae"


def test_io_modules_use_no_pickle():
    """No unpickler is imported or called by the io modules (checked on their syntax tree)."""
    unpicklers = {"pickle", "joblib", "cloudpickle", "dill", "marshal", "shelve"}
    modules = [io] + [
        importlib.import_module(f"sklearn_hsae.io.{info.name}")
        for info in pkgutil.iter_modules(io.__path__)
    ]
    assert len(modules) >= 5
    for module in modules:
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
    "format_version": (_set("format_version", 3), "format_version 3 is newer than this"),
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
    "negative counter": (
        lambda d, t: t["tokens_since_fired"].__setitem__(0, -1),
        "'tokens_since_fired': values span \\[-1, .*\\[0, inf\\)",
    ),
    "stored fitted array": (  # format 1 stored them; now the weights alone decide
        lambda d, t: t.update({"fitted.parent_components_": t["W_dec"] * 2}),
        "unexpected \\['fitted.parent_components_'\\]",
    ),
    "fitted scalar": (_set("fitted.colour_", 1), "unexpected key\\(s\\) \\['colour_'\\]"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_load_names_the_problem(edit, fitted, tmp_path):
    change, message = EDITS[edit]
    path = _edit(tmp_path, fitted, "hsae-global-f32-names", change)
    with pytest.raises(InvalidModelFileError, match=message):
        load(path)


def test_a_tree_parent_index_out_of_range_is_refused(X, tmp_path):
    """The tree stores its parent links in the weights: the model's declared ranges guard them."""
    est = HierarchicalSparseAutoencoder(
        architecture="tree", n_levels=3, n_parents=3, n_children=2, k=2, max_iter=1, random_state=0
    ).fit(X)
    save(est, tmp_path)
    doc, tensors = read_model(tmp_path)
    tensors["levels.2.parent_index"][0] = 6  # level 1 has 6 features: one past the last
    forge(tmp_path, doc, tensors)
    with pytest.raises(
        InvalidModelFileError,
        match="'levels.2.parent_index': values span \\[-?\\d+, 6\\], outside the valid "
        "range \\[-1, 6\\)",
    ):
        load(tmp_path)


def test_a_format_1_file_is_refused_with_the_way_out(fitted, tmp_path):
    """Format 1 also stored the derived arrays; this version reads neither it nor them."""
    save(fitted["sae-topk"], tmp_path)
    doc, tensors = read_model(tmp_path)
    doc["format_version"] = 1
    tensors["fitted.components_"] = tensors["W_dec"]  # as format 1 wrote it
    forge(tmp_path, doc, tensors)
    with pytest.raises(InvalidModelFileError) as info:
        load(tmp_path)
    assert str(info.value) == (
        f"config.json: format_version 1 is older than this sklearn_hsae reads; refit and save "
        f"the model again, or load it with sklearn_hsae {doc['package_version']}, which wrote "
        f"it (this version reads {FORMAT_VERSION})"
    )
    assert FORMAT_VERSION == 2


def test_the_l0_statistic_is_stored_and_checked(fitted, X, tmp_path):
    """l0_ (mean active latents per row of every level) is a training statistic, not a
    function of the weights: it travels in config.json when the estimator has one."""
    est = twin(fitted["hsae-unit-f64"])
    est.l0_ = [2.0, 1.75]
    save(est, tmp_path)
    doc, tensors = read_model(tmp_path)
    assert doc["fitted"]["l0_"] == [2.0, 1.75]
    assert load(tmp_path).l0_ == [2.0, 1.75]
    without = twin(fitted["hsae-unit-f64"])
    del without.l0_  # a fit interrupted before its first epoch ended has none
    save(without, tmp_path / "without")
    assert "l0_" not in read_model(tmp_path / "without")[0]["fitted"]
    assert not hasattr(load(tmp_path / "without"), "l0_")
    for bad in ([2.0], [2.0, -0.5], [2.0, "x"]):
        doc["fitted"]["l0_"] = bad
        forge(tmp_path, doc, tensors)
        with pytest.raises(InvalidModelFileError, match="fitted.l0_"):
            load(tmp_path)


def test_header_forms_the_library_reads_as_the_same_tensors_load(fitted, X, tmp_path):
    """The safetensors library, not a parser of ours, reads the header: an unknown field in
    an entry, an entry written as a list and a repeated name (the last one counts) describe
    the very same tensors, so the model loads unchanged."""
    est = fitted["sae-topk"]
    save(est, tmp_path)
    config = (tmp_path / CONFIG).read_bytes()
    header, data = split_safetensors((tmp_path / WEIGHTS).read_bytes())
    header.pop("__metadata__")
    entry = header["W_enc"]
    forms = {
        "unknown field": {**header, "W_enc": {**entry, "mode": "eval"}},
        "list": {**header, "W_enc": [entry["dtype"], entry["shape"], entry["data_offsets"]]},
    }
    for form, new_header in forms.items():
        forge_header(tmp_path, config, new_header, data)
        assert (load(tmp_path).transform(X) != est.transform(X)).nnz == 0, form
    # JSON text with W_enc twice: the first, transposed entry is overridden by the second.
    signed = json.dumps({**header, "__metadata__": signed_metadata(config)})
    text = '{"W_enc": ' + json.dumps({**entry, "shape": [16, 12]}) + ", " + signed[1:]
    write_raw(tmp_path, config, safetensors_bytes_from_text(text) + data)
    assert (load(tmp_path).transform(X) != est.transform(X)).nnz == 0


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
    monkeypatch.setattr(sklearn_hsae.io._load, "MAX_JSON_BYTES", size - 1)
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
    begin, end = header["W_enc"]["data_offsets"]
    claims = {  # 4 TiB claimed by a ~2 kB file, consistent and inconsistent with its offsets
        "consistent": {
            "dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [begin, begin + 2**42]
        },
        "short": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [begin, end]},
    }
    # The safetensors library refuses both: the claimed ranges do not tile the bytes on disk.
    messages = ["invalid offset|not fully covered", "invalid shape, data type, or offset"]
    for claim, message in zip(claims.values(), messages, strict=True):
        forge_header(tmp_path, config, {**header, "W_enc": claim}, data)
        with pytest.raises(InvalidModelFileError, match=f"^{WEIGHTS}: .*({message})"):
            load(tmp_path)
    (tmp_path / WEIGHTS).write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(InvalidModelFileError, match=f"^{WEIGHTS}: .*header too large"):
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


def test_lists_of_arrays_are_recomputed_and_their_index_ranges_checked(
    X, tmp_path, monkeypatch
):
    """A per-level fitted attribute (a list of arrays, as a multi-level model may export)
    is not stored but recomputed on load, and range-checked through the estimator's hook."""
    cls = HierarchicalSparseAutoencoder
    export = cls._export_fitted

    def export_with_levels(self, model, previous=None):
        export(self, model, previous)
        self.level_parent_ = [np.full(3, -1), np.arange(self.n_parents) % 3]

    monkeypatch.setattr(cls, "_export_fitted", export_with_levels)
    ranges = cls._integer_ranges
    monkeypatch.setattr(
        cls, "_integer_ranges", lambda self: {**ranges(self), "level_parent_": (-1, 3)}
    )
    est = cls(**HSAE, random_state=0).fit(X)
    save(est, tmp_path)
    doc, tensors = read_model(tmp_path)
    assert "level_parent_" not in doc["fitted"] and set(tensors) == set(est._model_state)
    loaded = load(tmp_path)
    assert isinstance(loaded.level_parent_, list) and len(loaded.level_parent_) == 2
    np.testing.assert_array_equal(loaded.level_parent_[1], np.arange(8) % 3)
    # Weights that imply an index one past the last valid parent are refused.
    monkeypatch.setattr(
        cls, "_integer_ranges", lambda self: {**ranges(self), "level_parent_.1": (-1, 2)}
    )
    with pytest.raises(InvalidModelFileError, match="level_parent_.1 .*valid range \\[-1, 2\\)"):
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
        width = est.components_.shape[0]
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
