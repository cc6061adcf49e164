"""Save and load fitted estimators without pickle; export a level to SAELens.

A saved model is a directory of two files, the layout Hugging Face, sparsify and
SAELens users know (weights in safetensors, everything else in JSON)::

    path/
      config.json         {"format": "sklearn_hsae", "format_version": 1,
                           "package_version": ..., "estimator": class name,
                           "params": get_params(), "config": {"type": ..., "fields": ...},
                           "fitted": fitted scalars and lists, "sha256": {tensor: hash}}
      model.safetensors   the model state under its state_dict names (W_enc, b_enc, ...)
                          and every fitted array as "fitted.<name>"; its metadata holds
                          {"format": "sklearn_hsae", "config_sha256": hash of config.json}

The two files vouch for each other: config.json records the SHA-256 of every tensor and
model.safetensors the SHA-256 of config.json, so a flipped byte anywhere is caught.
A hostile file can recompute the hashes, which is why :func:`load` also checks every
field against what the estimator itself knows before it builds a model.

Optimizer state (Adam moments) is not stored: these files are for inference and
fine-tuning, not for resuming a run bit for bit (pickle or joblib keep it). After
:func:`load`, ``partial_fit`` continues with a fresh Adam optimizer whose step count
starts at ``n_steps_``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from . import __version__
from ._baselines import SparseAutoencoder
from ._config import MODEL_CONFIGS
from ._estimator import HierarchicalSparseAutoencoder
from ._io_checks import (
    MAX_JSON_BYTES,
    ST_CODES,
    InvalidModelFileError,
    check_keys,
    json_object,
    coerce,
    param_from_json,
    read_bounded,
    read_safetensors_header,
    refuse,
    sha256,
    strict_json,
    to_json_value,
)
from ._saelens import saelens_export

__all__ = ["InvalidModelFileError", "export_saelens", "load", "save"]

FORMAT, FORMAT_VERSION = "sklearn_hsae", 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_FITTED_PREFIX = "fitted."
_ESTIMATORS = {cls.__name__: cls for cls in (HierarchicalSparseAutoencoder, SparseAutoencoder)}
# Fitted attributes BaseSparseAutoencoder sets for every estimator, with their lower bounds;
# the rest come from ``_export_fitted`` and are checked against a recomputation.
_BASE_FITTED = {
    "n_features_in_": (int, 1),
    "n_iter_": (int, 0),
    "n_steps_": (int, 0),
    "scale_": (float, 0.0),
    "loss_curve_": (list[float], None),
}
# Stored fitted arrays must match the ones the weights imply to this fraction of their
# largest entry: loose enough for a GPU's TF32 matmuls, tight enough to refuse garbage.
_FITTED_RTOL = 1e-2


def _public_fitted(est) -> dict:
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def _file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------- save
def save(estimator, path) -> None:
    """Save a fitted estimator to the directory ``path``, without pickle.

    Writes ``path/config.json`` (parameters, model configuration, fitted scalars,
    format version, tensor hashes) and ``path/model.safetensors`` (model weights and
    fitted arrays), replacing earlier copies of these two files; other files in
    ``path`` are left alone. Optimizer state is not saved (see :func:`load`).

    Parameters
    ----------
    estimator : HierarchicalSparseAutoencoder or SparseAutoencoder
        A fitted estimator.
    path : str or os.PathLike
        Directory to write; created if missing.

    Raises
    ------
    TypeError
        If ``estimator`` is not one of the package's estimators.
    ValueError
        If a parameter cannot be written as JSON, the weights hold NaN or infinity, or
        a parameter that shapes the model was changed with ``set_params`` after fitting.

    See Also
    --------
    load : Read the directory back.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.io import load, save
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> hsae = HierarchicalSparseAutoencoder(
    ...     n_parents=16, n_children=4, subspace_dim=2, k=3, max_iter=1, random_state=0
    ... ).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save(hsae, tmp)
    ...     restored = load(tmp)
    >>> (restored.transform(X) != hsae.transform(X)).nnz
    0
    """
    cls = type(estimator)
    if _ESTIMATORS.get(cls.__name__) is not cls:
        raise TypeError(f"save() stores {sorted(_ESTIMATORS)} estimators, got {cls.__name__}.")
    check_is_fitted(estimator)
    params = {
        name: to_json_value(value, f"parameter {name}")
        for name, value in estimator.get_params(deep=False).items()
    }
    config = estimator._config
    # The file must load: the fitted config must still be the one the parameters imply.
    _config_from_json(estimator, _config_to_json(config), estimator.n_features_in_,
                      ValueError, "the fitted model config")  # fmt: skip
    tensors = {}
    for name, array in estimator._model_state.items():
        if name.startswith(_FITTED_PREFIX):
            raise ValueError(f"Model state tensor {name!r} clashes with the fitted prefix.")
        tensors[name] = np.asarray(array, order="C")  # keeps 0-d shapes
    fitted = {}
    for name, value in sorted(_public_fitted(estimator).items()):
        if isinstance(value, np.ndarray) and value.dtype != object:
            tensors[_FITTED_PREFIX + name] = np.asarray(value, order="C")
        elif name == "feature_names_in_":
            fitted[name] = [str(v) for v in value]
        else:
            fitted[name] = to_json_value(value, f"fitted attribute {name}")
    for name, array in tensors.items():
        if array.dtype not in ST_CODES:
            raise ValueError(f"Tensor {name!r} has dtype {array.dtype}, which is not stored.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"Tensor {name!r} holds NaN or infinity; refusing to save it.")
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "estimator": cls.__name__,
        "params": params,
        "config": _config_to_json(config),
        "fitted": fitted,
        "sha256": {name: sha256(array) for name, array in sorted(tensors.items())},
    }
    config_bytes = json.dumps(document, indent=1, allow_nan=False).encode("utf-8")
    metadata = {"format": FORMAT, "config_sha256": _file_hash(config_bytes)}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _replace(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    _replace(path / CONFIG_FILE, lambda tmp: Path(tmp).write_bytes(config_bytes))


def _replace(target: Path, write) -> None:
    """Write to a temporary name, then rename: a crash never leaves half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _config_to_json(config) -> dict:
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return {"type": type(config).__name__, "fields": {k: to_json_value(v, k) for k, v in fields.items()}}


# ------------------------------------------------------------------- load
def load(path, *, device=None):
    """Load an estimator saved by :func:`save`, validating every byte first.

    The checks run in this order, and the first failure raises
    :class:`InvalidModelFileError` naming the file, the field and what was expected:

    1. both files are regular files of bounded size; ``config.json`` is strict JSON
       (no duplicate keys, NaN or integers beyond 64 bits); the safetensors header
       describes byte ranges that tile the data exactly;
    2. the SHA-256 of ``config.json`` matches the one in ``model.safetensors``;
    3. format and ``format_version``, every key and the JSON type of every field;
    4. the estimator class (by name, from an allow-list), its parameters through the
       estimator's own ``_validate_params`` and size checks;
    5. the model configuration (a dataclass rebuilt by name from an allow-list) equals
       the one the parameters imply (fields set from the training-set size must lie
       between 0 and their cap);
    6. tensor names, dtypes and shapes against an empty model built on the ``meta``
       device from that configuration; then, tensor by tensor, the SHA-256, finite
       values and the range of every integer tensor;
    7. fitted arrays and scalars against those recomputed from the weights, including
       the range of integer index arrays such as ``child_parent_``.

    Nothing is allocated from a size the file claims before that size is checked
    against the configuration and the bytes on disk.

    Parameters
    ----------
    path : str or os.PathLike
        Directory written by :func:`save`.
    device : str or torch.device, default=None
        Replaces the saved ``device`` parameter, e.g. ``"cpu"`` for a model saved with
        ``device="cuda"``. None keeps the saved value.

    Returns
    -------
    estimator : HierarchicalSparseAutoencoder or SparseAutoencoder
        Fitted; ``transform`` gives bitwise the codes of the saved estimator on the
        same device. Optimizer state is not stored: ``partial_fit`` continues with a
        fresh Adam optimizer (zero moments) and the step count ``n_steps_``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    InvalidModelFileError
        If anything in the directory is missing, corrupt, truncated, inconsistent or of
        an unknown format version (a ``ValueError`` subclass).

    See Also
    --------
    save : Write the directory.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from sklearn_hsae import SparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.io import InvalidModelFileError, load, save
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> sae = SparseAutoencoder(n_components=32, k=4, max_iter=1, random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save(sae, tmp)
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ...     loaded = load(tmp, device="cpu")
    ...     config = Path(tmp, "config.json")
    ...     _ = config.write_text(config.read_text().replace('"k": 4', '"k": 5'))
    ...     try:
    ...         load(tmp)
    ...     except InvalidModelFileError as exc:
    ...         print(str(exc)[:60])
    ['config.json', 'model.safetensors']
    config.json: its SHA-256 differs from the one model.safetens
    >>> (loaded.transform(X) != sae.transform(X)).nnz
    0
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {str(path)!r}.")
    if not path.is_dir():
        refuse(str(path), "is not a directory written by sklearn_hsae.io.save")
    raw = read_bounded(path / CONFIG_FILE, CONFIG_FILE, MAX_JSON_BYTES)
    header = read_safetensors_header(path / WEIGHTS_FILE, WEIGHTS_FILE)
    check_keys(header.metadata, f"{WEIGHTS_FILE} __metadata__", {"format", "config_sha256"})
    if header.metadata["format"] != FORMAT:
        refuse(WEIGHTS_FILE, f"format {header.metadata['format']!r} is not {FORMAT!r}")
    if header.metadata["config_sha256"] != _file_hash(raw):
        refuse(CONFIG_FILE, f"its SHA-256 differs from the one {WEIGHTS_FILE} records: one of "
                            "the two files was edited, damaged or comes from another save")  # fmt: skip
    doc = _check_document(strict_json(raw, CONFIG_FILE))
    est = _estimator_from_json(doc["estimator"], doc["params"], device)
    scalars = _base_fitted(doc["fitted"])
    config = _config_from_json(est, doc["config"], scalars["n_features_in_"],
                               InvalidModelFileError, f"{CONFIG_FILE} config")  # fmt: skip
    meta = _meta_model(est, config)
    expected = {name: (_numpy_dtype(t.dtype), tuple(t.shape)) for name, t in meta.state_dict().items()}
    _check_names(header, doc["sha256"], expected)
    ranges = meta.integer_ranges()
    with _Reader(path / WEIGHTS_FILE, header, doc["sha256"]) as reader:
        state = {name: reader.read(name, *spec, ranges) for name, spec in expected.items()}
        # Everything the torch model is built from has now been checked.
        for name, value in scalars.items():
            setattr(est, name, value)
        est._config, est._model_state = config, state
        est._export_fitted(est._model_from_state(state, torch.device("cpu")))
        _restore_fitted(est, doc["fitted"], header, reader)
    return est


def _check_document(doc) -> dict:
    keys = {"format", "format_version", "package_version", "estimator", "params", "config",
            "fitted", "sha256"}  # fmt: skip
    check_keys(doc, CONFIG_FILE, keys)
    if doc["format"] != FORMAT:
        refuse(CONFIG_FILE, f"format {doc['format']!r} is not {FORMAT!r}")
    version = coerce(doc["format_version"], int, f"{CONFIG_FILE} format_version")
    if version != FORMAT_VERSION:
        newer = "newer than this sklearn_hsae reads; upgrade" if version > FORMAT_VERSION else "unknown"
        refuse(CONFIG_FILE, f"format_version {version} is {newer} (this version reads {FORMAT_VERSION})")
    coerce(doc["package_version"], str, f"{CONFIG_FILE} package_version")
    for key in ("params", "fitted", "sha256"):
        json_object(doc[key], f"{CONFIG_FILE} {key}")
    return doc


def _estimator_from_json(name, params: dict, device):
    where = f"{CONFIG_FILE} estimator"
    if coerce(name, str, where) not in _ESTIMATORS:
        refuse(where, f"{name!r} is not one of {sorted(_ESTIMATORS)}")
    cls = _ESTIMATORS[name]
    check_keys(params, f"{CONFIG_FILE} params", set(cls._get_param_names()))
    values = {k: param_from_json(v, f"{CONFIG_FILE} params.{k}") for k, v in params.items()}
    if device is not None:
        values["device"] = device
    est = cls(**values)
    try:
        est._validate_params()
        if isinstance(est.device, str) and est.device != "auto":
            torch.device(est.device)
    except (InvalidParameterError, RuntimeError) as exc:
        refuse(f"{CONFIG_FILE} params", str(exc))
    return est


def _base_fitted(fitted: dict) -> dict:
    values = {}
    for name, (hint, low) in _BASE_FITTED.items():
        where = f"{CONFIG_FILE} fitted.{name}"
        if name not in fitted:
            refuse(where, "is missing")
        values[name] = coerce(fitted[name], hint, where)
        if low is not None and not values[name] > low - (hint is int):
            refuse(where, f"must be {'>=' if hint is int else '>'} {low}, got {values[name]}")
    return values


def _config_from_json(est, obj, n_features: int, error: type, where: str):
    """The model config from JSON, checked against the one est's parameters imply.

    Shared by save (``error=ValueError``: the estimator changed since fit) and load.
    A field that depends on the training-set size (found by asking the estimator for
    the config of 1 and of 2**62 samples) need only lie between 0 and its larger value.
    """
    check_keys(obj, where, {"type", "fields"})
    try:
        est._check_sizes(n_features)
        low, high = est._model_config(n_features, 1), est._model_config(n_features, 2**62)
    except ValueError as exc:
        raise error(f"{where}: the parameters are inconsistent ({exc})") from None
    if obj["type"] != type(low).__name__ or obj["type"] not in MODEL_CONFIGS:
        raise error(f"{where}: type {obj['type']!r} is not the {type(low).__name__} "
                    f"that {type(est).__name__} builds")  # fmt: skip
    cls = MODEL_CONFIGS[obj["type"]]
    hints = typing.get_type_hints(cls)
    check_keys(obj["fields"], f"{where}.fields", set(hints))
    values = {k: coerce(v, hints[k], f"{where}.fields.{k}") for k, v in obj["fields"].items()}
    for name, value in values.items():
        a, b = getattr(low, name), getattr(high, name)
        if a == b and value != a:
            raise error(f"{where}.fields.{name}={value!r} differs from {a!r}, which the "
                        f"parameters imply (refit, or restore the parameter)")  # fmt: skip
        if a != b and not 0 <= value <= max(a, b):
            raise error(f"{where}.fields.{name}={value!r} must lie in [0, {max(a, b)}]")
    return cls(**values)


def _meta_model(est, config):
    """The model with shapes but no storage: names, dtypes and shapes to expect."""
    try:
        return est._new_model(config, torch.device("meta"))
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        refuse(f"{CONFIG_FILE} config", f"cannot build the model ({exc})")


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    try:
        return torch.empty((), dtype=dtype).numpy().dtype
    except TypeError:  # bfloat16 and friends have no numpy dtype
        refuse(f"{CONFIG_FILE} config", f"the model holds {dtype} tensors, which cannot be stored")


def _check_names(header, hashes: dict, expected: dict) -> None:
    names = {n for n in header.tensors if not n.startswith(_FITTED_PREFIX)}
    if names != expected.keys():
        missing, extra = sorted(expected.keys() - names), sorted(names - expected.keys())
        refuse(WEIGHTS_FILE, f"model tensors differ from the architecture's: missing {missing}, "
                             f"unexpected {extra}")  # fmt: skip
    if hashes.keys() != header.tensors.keys():
        refuse(f"{CONFIG_FILE} sha256", f"lists {sorted(hashes)}, but {WEIGHTS_FILE} holds "
                                        f"{sorted(header.tensors)}")  # fmt: skip
    for name, digest in hashes.items():
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")):
            refuse(f"{CONFIG_FILE} sha256.{name}", f"must be 64 hex digits, got {digest!r:.80}")


class _Reader:
    """Reads one checked tensor at a time from a safetensors file (memory-mapped)."""

    def __init__(self, path: Path, header, hashes: dict):
        self.path, self.header, self.hashes = path, header, hashes

    def __enter__(self):
        try:
            self.file = safe_open(self.path, framework="numpy")
        except (SafetensorError, OSError) as exc:
            refuse(WEIGHTS_FILE, f"safetensors cannot open it ({exc})")
        return self

    def __exit__(self, *exc):
        self.file = None

    def read(self, name: str, dtype: np.dtype, shape: tuple, ranges: dict) -> np.ndarray:
        where = f"{WEIGHTS_FILE} tensor {name!r}"
        entry = self.header.tensors[name]
        if entry.dtype != dtype or entry.shape != shape:
            refuse(where, f"is {ST_CODES[entry.dtype]} {list(entry.shape)}, expected "
                          f"{ST_CODES.get(dtype, dtype)} {list(shape)}")  # fmt: skip
        try:
            array = np.array(self.file.get_tensor(name), copy=True)
        except (SafetensorError, OSError, ValueError) as exc:
            refuse(where, f"cannot be read ({exc})")
        if array.dtype != dtype or array.shape != shape:
            refuse(where, "changed while it was being read")
        if sha256(array) != self.hashes[name]:
            refuse(where, f"its SHA-256 differs from the one {CONFIG_FILE} records (damaged data)")
        if array.dtype.kind == "f":
            bad = array.size - int(np.isfinite(array).sum())
            if bad:
                refuse(where, f"holds {bad} NaN or infinite value(s)")
        elif name not in ranges:
            refuse(where, "is an integer tensor without a declared valid range; cannot check it")
        else:
            _check_range(array, where, *ranges[name])
        return array


def _check_range(array: np.ndarray, where: str, low: int, high: int | None) -> None:
    """Integers (and bools, as bytes) must lie in [low, high); high=None: no upper bound."""
    if array.size == 0:
        return
    values = array.view(np.uint8) if array.dtype.kind == "b" else array
    if int(values.min()) < low or (high is not None and int(values.max()) >= high):
        refuse(where, f"values span [{int(values.min())}, {int(values.max())}], outside the "
                      f"valid range [{low}, {'inf' if high is None else high})")  # fmt: skip


def _restore_fitted(est, fitted: dict, header, reader: _Reader) -> None:
    """Check the stored fitted attributes against the recomputed ones, then keep them."""
    derived = {k: v for k, v in _public_fitted(est).items() if k not in _BASE_FITTED}
    arrays = {k for k, v in derived.items() if isinstance(v, np.ndarray)}
    stored = {n[len(_FITTED_PREFIX):] for n in header.tensors if n.startswith(_FITTED_PREFIX)}
    if stored != arrays:
        refuse(WEIGHTS_FILE, f"fitted arrays {sorted(stored)} differ from the expected {sorted(arrays)}")
    check_keys(fitted, f"{CONFIG_FILE} fitted", set(_BASE_FITTED) | (derived.keys() - arrays),
               frozenset({"feature_names_in_"}))  # fmt: skip
    for name in sorted(derived.keys() - arrays):
        ref, where = derived[name], f"{CONFIG_FILE} fitted.{name}"
        value = coerce(fitted[name], type(to_json_value(ref, where)), where)
        if not _agrees(np.asarray(value), np.asarray(ref)):
            refuse(where, f"{value!r} disagrees with {ref!r}, which the weights imply")
        setattr(est, name, value)
    for name in sorted(arrays):
        ref = derived[name]
        array = reader.read(_FITTED_PREFIX + name, ref.dtype, ref.shape, {
            _FITTED_PREFIX + k: v for k, v in est._integer_ranges().items()})  # fmt: skip
        if not _agrees(array, ref):
            refuse(f"{WEIGHTS_FILE} tensor {_FITTED_PREFIX + name!r}",
                   "disagrees with the values the model weights imply")
        setattr(est, name, array)
    if "feature_names_in_" in fitted:
        names = coerce(fitted["feature_names_in_"], list[str], f"{CONFIG_FILE} fitted.feature_names_in_")
        if len(names) != est.n_features_in_:
            refuse(f"{CONFIG_FILE} fitted.feature_names_in_",
                   f"has {len(names)} names for {est.n_features_in_} features")
        est.feature_names_in_ = np.asarray(names, dtype=object)


def _agrees(stored: np.ndarray, ref: np.ndarray) -> bool:
    if ref.dtype.kind != "f":
        return np.array_equal(stored, ref)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    return np.allclose(stored, ref, rtol=_FITTED_RTOL, atol=_FITTED_RTOL * scale)


# ---------------------------------------------------------------- SAELens
def export_saelens(estimator, path, level="parent", *, metadata=None) -> None:
    """Write one flat level in the SAELens 6.x on-disk format.

    Writes ``path/cfg.json`` and ``path/sae_weights.safetensors`` with ``W_enc``
    (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,) and,
    for BatchTopK, ``threshold`` (d_sae,), so that ``sae_lens.SAE.load_from_disk(path)``
    reads it. Given raw activations, SAELens then picks the same latents as ``encode``
    and reports the same activation values, in the input's units:

    - ``normalize="global"`` is folded into the weights (``b_enc``, ``b_dec`` and the
      threshold divided by ``scale_``), ``normalize_activations="none"``;
    - ``normalize="unit"`` becomes SAELens' ``"constant_norm_rescale"`` (rows scaled to
      norm sqrt(d_in)) with ``W_enc`` divided and ``W_dec`` multiplied by sqrt(d_in);
      SAELens then reports activations in unit-norm units (ours are multiplied by each
      row's norm) and turns all-zero rows into NaN, where we return zeros;
    - TopK exports as architecture ``"topk"``; BatchTopK as ``"jumprelu"`` with every
      threshold equal to ``threshold_``, the form SAELens saves its own BatchTopK SAEs
      in for inference. Matryoshka prefixes only shape training and are dropped.

    Parameters
    ----------
    estimator : HierarchicalSparseAutoencoder or SparseAutoencoder
        A fitted estimator.
    path : str or os.PathLike
        Directory to write; created if missing.
    level : {"parent"}, default="parent"
        The level to export. For :class:`HierarchicalSparseAutoencoder` the parent TopK
        SAE (SAELens then reconstructs from the parents alone); routed children are no
        flat SAE and are refused. For :class:`SparseAutoencoder` "parent" names its one
        level, the whole dictionary.
    metadata : dict or None, default=None
        Extra SAELens metadata, e.g. ``{"model_name": "gpt2", "hook_name":
        "blocks.6.hook_resid_post"}``; JSON values only.

    Raises
    ------
    ValueError
        If the level or the architecture has no SAELens form.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.io import export_saelens
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> hsae = HierarchicalSparseAutoencoder(
    ...     n_parents=16, n_children=4, subspace_dim=2, k=3, max_iter=1, random_state=0
    ... ).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     export_saelens(hsae, tmp, metadata={"hook_name": "blocks.6.hook_resid_post"})
    ...     cfg = json.loads(Path(tmp, "cfg.json").read_text())
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ['cfg.json', 'sae_weights.safetensors']
    >>> cfg["architecture"], cfg["k"], cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]
    ('topk', 3, 64, 16, 'none')
    """
    check_is_fitted(estimator)
    if level != "parent":
        raise ValueError(f"level={level!r} has no SAELens form; only level='parent' (the flat "
                         "TopK level) can be exported: routed children are not a flat SAE.")  # fmt: skip
    cfg, tensors = saelens_export(estimator, __version__)
    extra = {k: to_json_value(v, f"metadata[{k!r}]") for k, v in (metadata or {}).items()}
    cfg["metadata"] = {**cfg["metadata"], **extra}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _replace(path / "sae_weights.safetensors", lambda tmp: save_file(tensors, tmp))
    cfg_bytes = json.dumps(cfg, indent=1, allow_nan=False).encode("utf-8")
    _replace(path / "cfg.json", lambda tmp: Path(tmp).write_bytes(cfg_bytes))
