"""Strict readers behind ``sklearn_hsae.io``: bounded JSON, typed fields, safetensors headers.

Nothing here trusts its input. Every size is checked before anything of that size is
allocated, every number is finite and fits in 64 bits, and every failure is an
``InvalidModelFileError`` whose message starts with the file and field at fault.
Only the standard library and numpy are used, so the checks run before torch sees a byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import types
import typing
from typing import NamedTuple

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_JSON_BYTES = 16 * 2**20  # config.json: parameters, scalars and one float per epoch
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors header lists names, shapes and offsets only

# safetensors dtype codes we read, as little-endian numpy dtypes (bf16 has no numpy twin).
ST_DTYPES = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
ST_CODES = {dtype: code for code, dtype in ST_DTYPES.items()}
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


def sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes in C order, little-endian (the safetensors layout)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    flat = flat.astype(flat.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(flat.view(np.uint8).data).hexdigest()


def regular_file_size(path: os.PathLike, where: str) -> int:
    """Size of a regular file; FIFOs, devices and directories are refused (no hang)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        refuse(where, "the file is missing")
    if not stat.S_ISREG(info.st_mode):
        refuse(where, "is not a regular file")
    return info.st_size


def read_bounded(path: os.PathLike, where: str, limit: int) -> bytes:
    if regular_file_size(path, where) > limit:
        refuse(where, f"is larger than the {limit}-byte limit")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        refuse(where, f"is larger than the {limit}-byte limit")
    return data


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


# ----------------------------------------------------------- safetensors
class TensorEntry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    """Offset of the first byte after the header."""
    end: int


class Header(NamedTuple):
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]


def read_safetensors_header(path: os.PathLike, where: str) -> Header:
    """Parse and check a safetensors header without reading any tensor data.

    The layout is ``u64 little-endian N | N bytes of JSON | data``. Every entry's byte
    range must match its dtype and shape, and the ranges must tile the data exactly, so
    no shape claimed by the header can exceed the bytes actually on disk.
    """
    size = regular_file_size(path, where)
    if size < 8:
        refuse(where, f"is truncated: {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, MAX_HEADER_BYTES):
            refuse(
                where,
                f"header claims {n} bytes but the file has {size - 8} after "
                f"the length (limit {MAX_HEADER_BYTES})",
            )
        raw = f.read(n)
    if len(raw) != n:
        refuse(where, "is truncated inside the header")
    header = strict_json(raw, f"{where} header")
    metadata = json_object(
        json_object(header, f"{where} header").pop("__metadata__", {}), f"{where} __metadata__"
    )
    for key, value in metadata.items():
        if type(value) is not str:
            refuse(f"{where} __metadata__[{key!r}]", f"must be a string, got {describe(value)}")
    tensors = {name: _entry(body, f"{where} tensor {name!r}") for name, body in header.items()}
    position = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            refuse(
                f"{where} tensor {name!r}",
                f"starts at byte {entry.begin}, expected {position} (gap or overlap in the data)",
            )
        position = entry.end
    if position != size - 8 - n:
        refuse(
            where,
            f"data section has {size - 8 - n} bytes but the header describes "
            f"{position} (truncated or padded file)",
        )
    return Header(tensors, metadata)


def _entry(body, where: str) -> TensorEntry:
    check_keys(body, where, {"dtype", "shape", "data_offsets"})
    if body["dtype"] not in ST_DTYPES:
        refuse(
            where, f"unknown dtype {describe(body['dtype'])}; expected one of {sorted(ST_DTYPES)}"
        )
    dtype = ST_DTYPES[body["dtype"]]
    shape = coerce(body["shape"], tuple[int, ...], f"{where} shape")
    begin, end = coerce(body["data_offsets"], tuple[int, int], f"{where} data_offsets")
    if min(shape, default=0) < 0 or not 0 <= begin <= end:
        refuse(where, f"negative size in shape {shape} or data_offsets {[begin, end]}")
    n_bytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if end - begin != n_bytes:
        refuse(
            where,
            f"shape {shape} of {body['dtype']} needs {n_bytes} bytes, "
            f"data_offsets give {end - begin}",
        )
    return TensorEntry(dtype, shape, begin, end)
