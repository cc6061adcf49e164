"""The two files on disk: bounded reads, atomic writes, hashes, the safetensors library.

The safetensors library checks a weights file's layout when it opens it: the header's
declared length (at most 100 MB and within the file), its JSON, the dtype names, that
every shape times its dtype's size equals its byte range (with overflow checks), and
that the ranges tile the data up to the file's last byte, with no gap or overlap. So
once :class:`WeightsFile` is open, no shape it reports can exceed the bytes on disk.
What the library cannot know (which names, dtypes and shapes a model needs, finite
values, index ranges, hashes) is checked by ``_checks``.
"""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
from safetensors import SafetensorError, safe_open

from ._json import refuse

MAX_JSON_BYTES = 16 * 2**20  # config.json: parameters, scalars and one float per epoch

# The dtypes a model file may hold, as little-endian numpy dtypes and their safetensors
# codes (bf16 and the fp8 types have no numpy twin, so no model here stores them).
ST_CODES = {
    np.dtype(numpy): code
    for numpy, code in [
        ("|b1", "BOOL"),
        ("|u1", "U8"),
        ("|i1", "I8"),
        ("<i2", "I16"),
        ("<u2", "U16"),
        ("<f2", "F16"),
        ("<i4", "I32"),
        ("<u4", "U32"),
        ("<f4", "F32"),
        ("<i8", "I64"),
        ("<u8", "U64"),
        ("<f8", "F64"),
    ]
}


def sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes in C order, little-endian (the safetensors layout)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    flat = flat.astype(flat.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(flat.view(np.uint8).data).hexdigest()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        data = f.read(limit + 1)  # the file may have grown since stat
    if len(data) > limit:
        refuse(where, f"is larger than the {limit}-byte limit")
    return data


class WeightsFile:
    """A safetensors file opened by the safetensors library; every error it raises becomes
    an ``InvalidModelFileError`` naming the file.

    Use as a context manager. ``metadata`` is the header's ``__metadata__`` (strings
    only, checked by the library); ``entries`` maps each tensor name to its safetensors
    dtype code and shape, read from the header alone.
    """

    def __init__(self, path: os.PathLike, where: str):
        self.path, self.where = path, where

    def __enter__(self):
        regular_file_size(self.path, self.where)  # safe_open would block on a FIFO
        self._file = None
        try:
            self._file = safe_open(self.path, framework="numpy").__enter__()
            self.metadata = self._file.metadata() or {}
            names = self._file.keys()  # a list: safe_open is no dict
            slices = {name: self._file.get_slice(name) for name in names}
            self.entries = {n: (s.get_dtype(), tuple(s.get_shape())) for n, s in slices.items()}
        except (SafetensorError, OSError) as exc:
            self.__exit__(None, None, None)
            refuse(self.where, f"the safetensors library cannot read it ({exc})")
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.__exit__(*exc)  # unmaps the file
            self._file = None

    def check_entry(self, name: str, dtype: np.dtype, shape: tuple) -> None:
        """Refuse the tensor ``name`` unless the header says it is ``dtype`` and ``shape``."""
        code, found = self.entries[name]
        if code != ST_CODES.get(dtype) or found != shape:
            refuse(
                f"{self.where} tensor {name!r}",
                f"is {code} {list(found)}, expected {ST_CODES.get(dtype, dtype)} {list(shape)}",
            )

    def read(self, name: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """The tensor ``name``, which must be ``dtype`` and ``shape``, as a new array.

        Both are compared with the header before a byte is read, so the library is only
        asked for tensors whose size the configuration vouches for.
        """
        where = f"{self.where} tensor {name!r}"
        self.check_entry(name, dtype, shape)
        try:
            array = np.array(self._file.get_tensor(name), copy=True)  # not a view of the map
        except (SafetensorError, OSError, ValueError) as exc:
            refuse(where, f"cannot be read ({exc})")
        if array.dtype != dtype or array.shape != shape:
            refuse(where, "changed while it was being read")
        return array
