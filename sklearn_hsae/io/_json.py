"""Strict JSON behind ``sklearn_hsae.io``: no duplicate keys, typed fields, the error type.

Nothing here trusts its input. Every number is finite and fits in 64 bits, every field
has the JSON type its type hint asks for, and every failure is an
``InvalidModelFileError`` whose message starts with the file and field at fault.
Only the standard library and numpy are used, so the checks run before torch sees a byte.
"""

from __future__ import annotations

import json
import math
import types
import typing

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RANDOM_STATE_KEY = "numpy.random.RandomState"


class InvalidModelFileError(ValueError):
    """A model file is corrupt, truncated, hostile or from an unknown format version.

    Raised by :func:`sklearn_hsae.io.load` for every problem with the files' contents;
    the message names the file, the field and what was expected. A subclass of
    ``ValueError``, so ``except ValueError`` also catches it.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_hsae.io import InvalidModelFileError, load
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "config.json").write_text("{}")
    ...     try:
    ...         load(tmp)
    ...     except InvalidModelFileError as exc:
    ...         print(exc)
    model.safetensors: the file is missing
    """


InvalidModelFileError.__module__ = "sklearn_hsae.io"  # its documented home


def refuse(where: str, problem: str) -> typing.NoReturn:
    raise InvalidModelFileError(f"{where}: {problem}")


def describe(value) -> str:
    """``int 3``, ``str 'two'``: the JSON type and a short repr, for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


# ------------------------------------------------------------------ JSON
def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _int64(text: str) -> int:
    value = int(text)  # Python refuses > 4300 digits before converting
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer {text[:30]}... does not fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} overflows a float")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed: model files hold finite numbers only")


def strict_json(data: bytes, where: str):
    """Parse UTF-8 JSON; no duplicate keys, NaN, infinities or integers beyond int64."""
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_int=_int64,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        refuse(where, f"is not valid JSON ({exc})")


def json_object(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        refuse(where, f"must be a JSON object, got {describe(obj)}")
    return obj


def check_keys(obj, where: str, required: set, optional: frozenset = frozenset()) -> dict:
    """obj must be a JSON object with every required key and no key outside both sets."""
    json_object(obj, where)
    missing = sorted(required - obj.keys())
    extra = sorted(obj.keys() - required - optional)
    if missing:
        refuse(where, f"missing key(s) {missing}")
    if extra:
        refuse(where, f"unexpected key(s) {extra}")
    return obj


def coerce(value, hint, where: str):
    """Check a JSON value against a type hint; return it as that type (lists -> tuples).

    Supports bool, int, float, str, None, ``X | Y``, ``tuple[X, ...]``, ``tuple[X, Y]``
    and ``list[X]``: the field types of every config in ``_config.MODEL_CONFIGS``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (bool, str, type(None)):
        if type(value) is not hint:
            refuse(where, f"must be {hint.__name__}, got {describe(value)}")
        return value
    if hint is int:
        if type(value) is not int:
            refuse(where, f"must be an integer, got {describe(value)}")
        return value
    if hint is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            refuse(where, f"must be a finite number, got {describe(value)}")
        return float(value)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option, where)
            except InvalidModelFileError:
                pass
        refuse(
            where,
            f"must be {' or '.join(getattr(a, '__name__', str(a)) for a in args)}, "
            f"got {describe(value)}",
        )
    if origin in (tuple, list):
        if type(value) is not list:
            refuse(where, f"must be a list, got {describe(value)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                refuse(where, f"must have {len(args)} entries, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            items = [coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs]
        else:
            items = [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    raise NotImplementedError(f"sklearn_hsae.io cannot check fields of type {hint!r} ({where}).")


def to_json_value(value, where: str):
    """A parameter or fitted scalar as JSON: numbers, strings, None, lists, RandomState."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}; only finite numbers can be saved.")
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1:
        return [to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.random.RandomState):
        _, keys, pos, has_gauss, cached = value.get_state()
        state = {"keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss}
        return {RANDOM_STATE_KEY: {**state, "cached_gaussian": float(cached)}}
    if type(value).__module__ == "torch" and type(value).__name__ == "device":
        return str(value)
    raise ValueError(f"{where} of type {type(value).__name__} cannot be saved as JSON.")


def param_from_json(value, where: str):
    """A parameter from JSON: scalars, flat lists of numbers, or an encoded RandomState."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        for i, v in enumerate(value):
            if type(v) not in (int, float):
                refuse(f"{where}[{i}]", f"must be a number, got {describe(v)}")
        return value
    if not (isinstance(value, dict) and value.keys() == {RANDOM_STATE_KEY}):
        refuse(
            where,
            "must be a number, string, boolean, null, list of numbers or "
            f"{{{RANDOM_STATE_KEY!r}: ...}}, got {describe(value)}",
        )
    body = value[RANDOM_STATE_KEY]
    where = f"{where}.{RANDOM_STATE_KEY}"
    check_keys(body, where, {"keys", "pos", "has_gauss", "cached_gaussian"})
    keys = coerce(body["keys"], list[int], f"{where}.keys")
    if len(keys) != 624 or not all(0 <= k < 2**32 for k in keys):
        refuse(f"{where}.keys", "must be 624 integers in [0, 2**32)")
    pos = coerce(body["pos"], int, f"{where}.pos")
    has_gauss = coerce(body["has_gauss"], int, f"{where}.has_gauss")
    if not (0 <= pos <= 624 and has_gauss in (0, 1)):
        refuse(where, f"pos={pos} must lie in [0, 624] and has_gauss={has_gauss} in {{0, 1}}")
    state = (
        "MT19937",
        np.array(keys, dtype=np.uint32),
        pos,
        has_gauss,
        coerce(body["cached_gaussian"], float, f"{where}.cached_gaussian"),
    )
    rng = np.random.RandomState()
    rng.set_state(state)
    return rng
