"""What a model file must agree with: the estimator's parameters, config and weights.

The safetensors library and ``_json`` say a file is well-formed; the checks here say it
describes a model this package would have written, using only what each estimator knows
about itself (``_validate_params``, ``_check_sizes``, ``_model_config``, an empty model on
the ``meta`` device, ``integer_ranges``, ``_integer_ranges``), so a new architecture is
covered without changes here.
"""

from __future__ import annotations

import typing

import numpy as np
import torch
from sklearn.utils._param_validation import InvalidParameterError

from .._config import MODEL_CONFIGS
from ._files import WeightsFile, sha256
from ._format import (
    BASE_FITTED,
    CONFIG_FILE,
    ESTIMATORS,
    FORMAT,
    FORMAT_VERSION,
    LOCAL_PARAMS,
    OPTIONAL_FITTED,
    WEIGHTS_FILE,
)
from ._json import check_keys, coerce, json_object, param_from_json, refuse


def check_document(doc) -> dict:
    """The top level of config.json: format and version first (a file of another version
    may have other keys), then every key and the JSON type of the containers."""
    json_object(doc, CONFIG_FILE)
    if "format" in doc and doc["format"] != FORMAT:
        refuse(CONFIG_FILE, f"format {doc['format']!r} is not {FORMAT!r}")
    if "format_version" in doc:
        version = coerce(doc["format_version"], int, f"{CONFIG_FILE} format_version")
        check_version(version, doc.get("package_version"))
    keys = {"format", "format_version", "package_version", "estimator", "params", "config"}
    check_keys(doc, CONFIG_FILE, keys | {"fitted", "sha256"})
    coerce(doc["package_version"], str, f"{CONFIG_FILE} package_version")
    for key in ("params", "fitted", "sha256"):
        json_object(doc[key], f"{CONFIG_FILE} {key}")
    return doc


def check_version(version: int, written_by) -> None:
    if version > FORMAT_VERSION:
        problem = "newer than this sklearn_hsae reads; upgrade sklearn_hsae"
    elif 1 <= version < FORMAT_VERSION:
        # Version 1 also stored every fitted array; this reader keeps no code for it.
        by = (
            f"sklearn_hsae {written_by}" if isinstance(written_by, str) else "an older sklearn_hsae"
        )
        problem = (
            f"older than this sklearn_hsae reads; refit and save the model again, or load "
            f"it with {by:.60}, which wrote it"
        )
    elif version != FORMAT_VERSION:
        problem = "unknown"
    else:
        return
    refuse(
        CONFIG_FILE, f"format_version {version} is {problem} (this version reads {FORMAT_VERSION})"
    )


def estimator_from_json(name, params: dict, device):
    where = f"{CONFIG_FILE} estimator"
    if coerce(name, str, where) not in ESTIMATORS:
        refuse(where, f"{name!r} is not one of {sorted(ESTIMATORS)}")
    cls = ESTIMATORS[name]
    check_keys(params, f"{CONFIG_FILE} params", set(cls._get_param_names()))
    values = {k: param_from_json(v, f"{CONFIG_FILE} params.{k}") for k, v in params.items()}
    for key in LOCAL_PARAMS:
        if values.get(key) is not None:
            refuse(
                f"{CONFIG_FILE} params.{key}",
                "must be null: a model file may not choose where fit writes",
            )
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


def fitted_from_json(fitted, est) -> dict:
    """The stored fitted values, checked: types, lower bounds and lengths.

    Returns them as attributes to set; ``feature_names_in_`` becomes an object array.
    """
    where = f"{CONFIG_FILE} fitted"
    check_keys(fitted, where, set(BASE_FITTED), frozenset(OPTIONAL_FITTED))
    values = {}
    for name, (hint, low) in BASE_FITTED.items():
        values[name] = coerce(fitted[name], hint, f"{where}.{name}")
        if low is not None and not values[name] > low - (hint is int):
            refuse(
                f"{where}.{name}",
                f"must be {'>=' if hint is int else '>'} {low}, got {values[name]}",
            )
    if "feature_names_in_" in fitted:
        names = coerce(fitted["feature_names_in_"], list[str], f"{where}.feature_names_in_")
        if len(names) != values["n_features_in_"]:
            refuse(
                f"{where}.feature_names_in_",
                f"has {len(names)} names for {values['n_features_in_']} features",
            )
        values["feature_names_in_"] = np.asarray(names, dtype=object)
    if "l0_" in fitted:
        l0 = coerce(fitted["l0_"], list[float], f"{where}.l0_")
        n_levels = getattr(est, "n_levels", 1)  # a SparseAutoencoder has one level
        if len(l0) != n_levels or min(l0, default=0.0) < 0:
            refuse(f"{where}.l0_", f"must be {n_levels} non-negative numbers, got {l0!r:.80}")
        values["l0_"] = l0
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


def check_names(entries: dict, hashes: dict, expected: dict) -> None:
    """The file holds exactly the model's tensors, each with a well-formed hash."""
    if entries.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - entries), sorted(entries.keys() - expected)
        refuse(
            WEIGHTS_FILE,
            f"model tensors differ from the architecture's: missing {missing}, unexpected {extra}",
        )
    if hashes.keys() != entries.keys():
        refuse(
            f"{CONFIG_FILE} sha256",
            f"lists {sorted(hashes)}, but {WEIGHTS_FILE} holds {sorted(entries)}",
        )
    for name, digest in hashes.items():
        if not (
            isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
        ):
            refuse(f"{CONFIG_FILE} sha256.{name}", f"must be 64 hex digits, got {digest!r:.80}")


def read_state(weights: WeightsFile, expected: dict, hashes: dict, ranges: dict) -> dict:
    """Every model tensor, checked: dtype and shape (all of them before any data is read),
    then one by one the SHA-256, finite values and the range of every integer tensor."""
    for name, (dtype, shape) in expected.items():
        weights.check_entry(name, dtype, shape)
    state = {}
    for name, (dtype, shape) in expected.items():
        where = f"{WEIGHTS_FILE} tensor {name!r}"
        array = weights.read(name, dtype, shape)
        if sha256(array) != hashes[name]:
            refuse(where, f"its SHA-256 differs from the one {CONFIG_FILE} records (damaged data)")
        if array.dtype.kind == "f":
            bad = array.size - int(np.isfinite(array).sum())
            if bad:
                refuse(where, f"holds {bad} NaN or infinite value(s)")
        elif name not in ranges:
            refuse(where, "is an integer tensor without a declared valid range; cannot check it")
        else:
            check_range(array, where, *ranges[name])
        state[name] = array
    return state


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


def check_fitted_ranges(est) -> None:
    """The integer fitted arrays recomputed from the weights (``child_parent_``, one array
    per level, ...) lie in the ranges the estimator declares (``_integer_ranges``).

    The model's own ranges were checked on its tensors; this guards the indices that the
    estimator derives from them. A list attribute's range applies to every item unless
    ``name.i`` has its own.
    """
    declared = est._integer_ranges()
    for name, value in vars(est).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            part = f"{name}.{i}" if isinstance(value, list) else name
            bounds = declared.get(part, declared.get(name))
            if isinstance(item, np.ndarray) and item.dtype.kind in "iub" and bounds is not None:
                check_range(item, f"{WEIGHTS_FILE}: fitted {part} (from the weights)", *bounds)


def undeclared_integers(model, tensors: dict) -> list[str]:
    """Integer tensors about to be saved whose valid range the model does not declare."""
    ranges = getattr(model, "integer_ranges", dict)()
    return sorted(n for n, a in tensors.items() if a.dtype.kind in "iub" and n not in ranges)
