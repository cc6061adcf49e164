"""What a model file must agree with: the estimator's parameters, config, weights, fitted state.

The generic readers of ``_io_checks`` say a file is well-formed; the checks here say it
describes a model this package would have written, using only what each estimator knows
about itself (``_validate_params``, ``_check_sizes``, ``_model_config``, an empty model on
the ``meta`` device, ``integer_ranges``, ``_export_fitted``), so a new architecture is
covered without changes here.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from sklearn.utils._param_validation import InvalidParameterError

from ._estimators import SparseAutoencoder
from ._config import MODEL_CONFIGS
from ._estimators import HierarchicalSparseAutoencoder
from ._io_checks import (
    ST_CODES,
    check_keys,
    coerce,
    json_object,
    param_from_json,
    refuse,
    sha256,
    to_json_value,
)

FORMAT, FORMAT_VERSION = "sklearn_hsae", 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
FITTED_PREFIX = "fitted."
# Machine-local parameters a file never carries: where this machine writes checkpoints.
LOCAL_PARAMS = frozenset({"checkpoint_dir"})
ESTIMATORS = {cls.__name__: cls for cls in (HierarchicalSparseAutoencoder, SparseAutoencoder)}
# Fitted attributes BaseSparseAutoencoder sets for every estimator, with their lower bounds;
# the rest come from ``_export_fitted`` and are checked against a recomputation.
BASE_FITTED = {
    "n_features_in_": (int, 1),
    "n_iter_": (int, 0),
    "n_steps_": (int, 0),
    "scale_": (float, 0.0),
    "loss_curve_": (list[float], None),
    "l0_": (list[float], 0.0),
}
# Stored fitted arrays must match the ones the weights imply to this fraction of their
# largest entry: loose enough for a GPU's TF32 matmuls, tight enough to refuse garbage.
FITTED_RTOL = 1e-2


def public_fitted(est) -> dict:
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def check_document(doc) -> dict:
    keys = {
        "format",
        "format_version",
        "package_version",
        "estimator",
        "params",
        "config",
        "fitted",
        "sha256",
    }
    check_keys(doc, CONFIG_FILE, keys)
    if doc["format"] != FORMAT:
        refuse(CONFIG_FILE, f"format {doc['format']!r} is not {FORMAT!r}")
    version = coerce(doc["format_version"], int, f"{CONFIG_FILE} format_version")
    if version != FORMAT_VERSION:
        newer = (
            "newer than this sklearn_hsae reads; upgrade" if version > FORMAT_VERSION else "unknown"
        )
        refuse(
            CONFIG_FILE,
            f"format_version {version} is {newer} (this version reads {FORMAT_VERSION})",
        )
    coerce(doc["package_version"], str, f"{CONFIG_FILE} package_version")
    for key in ("params", "fitted", "sha256"):
        json_object(doc[key], f"{CONFIG_FILE} {key}")
    return doc


def estimator_from_json(name, params: dict, device):
    where = f"{CONFIG_FILE} estimator"
    if coerce(name, str, where) not in ESTIMATORS:
        refuse(where, f"{name!r} is not one of {sorted(ESTIMATORS)}")
    cls = ESTIMATORS[name]
    check_keys(params, f"{CONFIG_FILE} params", set(cls._get_param_names()))
    values = {k: param_from_json(v, f"{CONFIG_FILE} params.{k}") for k, v in params.items()}
    for key in LOCAL_PARAMS:
        if values.get(key) is not None:
            refuse(f"{CONFIG_FILE} params.{key}", "must be null: a model file may not choose where fit writes")
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


def base_fitted(fitted: dict) -> dict:
    values = {}
    for name, (hint, low) in BASE_FITTED.items():
        where = f"{CONFIG_FILE} fitted.{name}"
        if name not in fitted:
            refuse(where, "is missing")
        values[name] = coerce(fitted[name], hint, where)
        items = values[name] if isinstance(values[name], list) else [values[name]]
        if low is not None and not all(v > low - (hint is int) for v in items):
            refuse(where, f"must be {'>=' if hint is int else '>'} {low}, got {values[name]}")
    return values


def config_from_json(est, obj, n_features: int, error: type, where: str):
    """The model config from JSON, checked against the one est's parameters imply.

    Shared by save (``error=ValueError``: the estimator changed since fit) and load.
    A field that depends on the training-set size or length (found by asking the
    estimator for the config of 1 and of 2**62 samples and steps) need only lie between
    0 and its larger value.
    """
    check_keys(obj, where, {"type", "fields"})
    try:
        est._check_sizes(n_features)
        low = est._model_config(n_features, 1, 1)
        high = est._model_config(n_features, 2**62, 2**62)
    except ValueError as exc:
        raise error(f"{where}: the parameters are inconsistent ({exc})") from None
    if obj["type"] != type(low).__name__ or obj["type"] not in MODEL_CONFIGS:
        raise error(
            f"{where}: type {obj['type']!r} is not the {type(low).__name__} "
            f"that {type(est).__name__} builds"
        )
    cls = MODEL_CONFIGS[obj["type"]]
    hints = typing.get_type_hints(cls)
    check_keys(obj["fields"], f"{where}.fields", set(hints))
    values = {k: coerce(v, hints[k], f"{where}.fields.{k}") for k, v in obj["fields"].items()}
    for name, value in values.items():
        a, b = getattr(low, name), getattr(high, name)
        if a == b and value != a:
            raise error(
                f"{where}.fields.{name}={value!r} differs from {a!r}, which the "
                f"parameters imply (refit, or restore the parameter)"
            )
        if a != b and not 0 <= value <= max(a, b):
            raise error(f"{where}.fields.{name}={value!r} must lie in [0, {max(a, b)}]")
    return cls(**values)


def meta_model(est, config):
    """The model with shapes but no storage: names, dtypes and shapes to expect."""
    try:
        return est._new_model(config, torch.device("meta"))
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        refuse(f"{CONFIG_FILE} config", f"cannot build the model ({exc})")


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    try:
        return torch.empty((), dtype=dtype).numpy().dtype
    except TypeError:  # bfloat16 and friends have no numpy dtype
        refuse(f"{CONFIG_FILE} config", f"the model holds {dtype} tensors, which cannot be stored")


def check_names(header, hashes: dict, expected: dict) -> None:
    names = {n for n in header.tensors if not n.startswith(FITTED_PREFIX)}
    if names != expected.keys():
        missing, extra = sorted(expected.keys() - names), sorted(names - expected.keys())
        refuse(
            WEIGHTS_FILE,
            f"model tensors differ from the architecture's: missing {missing}, unexpected {extra}",
        )
    if hashes.keys() != header.tensors.keys():
        refuse(
            f"{CONFIG_FILE} sha256",
            f"lists {sorted(hashes)}, but {WEIGHTS_FILE} holds {sorted(header.tensors)}",
        )
    for name, digest in hashes.items():
        if not (
            isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
        ):
            refuse(f"{CONFIG_FILE} sha256.{name}", f"must be 64 hex digits, got {digest!r:.80}")


class TensorReader:
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
            refuse(
                where,
                f"is {ST_CODES[entry.dtype]} {list(entry.shape)}, expected "
                f"{ST_CODES.get(dtype, dtype)} {list(shape)}",
            )
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
            check_range(array, where, *ranges[name])
        return array


def check_range(array: np.ndarray, where: str, low: int, high: int | None) -> None:
    """Integers (and bools, as bytes) must lie in [low, high); high=None: no upper bound."""
    if array.size == 0:
        return
    values = array.view(np.uint8) if array.dtype.kind == "b" else array
    if int(values.min()) < low or (high is not None and int(values.max()) >= high):
        refuse(
            where,
            f"values span [{int(values.min())}, {int(values.max())}], outside the "
            f"valid range [{low}, {'inf' if high is None else high})",
        )


def array_parts(name: str, value) -> dict | None:
    """A fitted attribute as safetensors entries, or None if it belongs in JSON.

    An array is one entry; a list of arrays (one per level, say) is ``name.0``,
    ``name.1``, ...
    """
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {name: value}
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, np.ndarray) and v.dtype != object for v in value):
            return {f"{name}.{i}": v for i, v in enumerate(value)}
    return None


def integer_ranges(est, model) -> dict:
    """Declared [low, high) of integer tensors: the model's, then the fitted arrays'.

    A list attribute's range applies to every item unless ``name.i`` has its own.
    """
    ranges = dict(getattr(model, "integer_ranges", dict)())
    declared = est._integer_ranges()
    for name, value in public_fitted(est).items():
        for part in array_parts(name, value) or {}:
            if part in declared or name in declared:
                ranges[FITTED_PREFIX + part] = declared.get(part, declared.get(name))
    return ranges


def restore_fitted(est, fitted: dict, header, reader: TensorReader, model) -> None:
    """Check the stored fitted attributes against the recomputed ones, then keep them."""
    derived = {k: v for k, v in public_fitted(est).items() if k not in BASE_FITTED}
    parts = {}  # safetensors name -> (attribute, recomputed array)
    for name, value in derived.items():
        for part, ref in (array_parts(name, value) or {}).items():
            parts[FITTED_PREFIX + part] = (name, ref)
    stored = {n for n in header.tensors if n.startswith(FITTED_PREFIX)}
    if stored != parts.keys():
        refuse(
            WEIGHTS_FILE, f"fitted arrays {sorted(stored)} differ from the expected {sorted(parts)}"
        )
    in_arrays = {name for name, _ in parts.values()}
    optional = frozenset({"feature_names_in_"})
    check_keys(
        fitted, f"{CONFIG_FILE} fitted", set(BASE_FITTED) | (derived.keys() - in_arrays), optional
    )
    for name in sorted(derived.keys() - in_arrays):
        ref, where = derived[name], f"{CONFIG_FILE} fitted.{name}"
        value = coerce(fitted[name], type(to_json_value(ref, where)), where)
        if not agrees(np.asarray(value), np.asarray(ref)):
            refuse(where, f"{value!r} disagrees with {ref!r}, which the weights imply")
        setattr(est, name, value)
    ranges, arrays = integer_ranges(est, model), {}
    for part, (_, ref) in sorted(parts.items()):
        arrays[part] = reader.read(part, ref.dtype, ref.shape, ranges)
        if not agrees(arrays[part], ref):
            refuse(f"{WEIGHTS_FILE} tensor {part!r}", "disagrees with the values the weights imply")
    for name in in_arrays:
        ref = derived[name]
        if isinstance(ref, np.ndarray):
            setattr(est, name, arrays[FITTED_PREFIX + name])
        else:
            setattr(
                est, name, type(ref)(arrays[f"{FITTED_PREFIX}{name}.{i}"] for i in range(len(ref)))
            )
    if "feature_names_in_" in fitted:
        where = f"{CONFIG_FILE} fitted.feature_names_in_"
        names = coerce(fitted["feature_names_in_"], list[str], where)
        if len(names) != est.n_features_in_:
            refuse(where, f"has {len(names)} names for {est.n_features_in_} features")
        est.feature_names_in_ = np.asarray(names, dtype=object)


def undeclared_integers(est, model, tensors: dict) -> list[str]:
    """Integer tensors about to be saved whose valid range nobody declared."""
    ranges = integer_ranges(est, model)
    return sorted(n for n, a in tensors.items() if a.dtype.kind in "iub" and n not in ranges)


def agrees(stored: np.ndarray, ref: np.ndarray) -> bool:
    if ref.dtype.kind != "f":
        return np.array_equal(stored, ref)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    return np.allclose(stored, ref, rtol=FITTED_RTOL, atol=FITTED_RTOL * scale)
