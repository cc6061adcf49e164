"""Read and forge ``sklearn_hsae.io`` model directories byte by byte, for the io tests.

A forger here plays the hostile author: it recomputes every hash so that a file reaches
the structural checks instead of failing on the checksum.
"""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from sklearn_hsae.io._json import sha256

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def read_model(path):
    """(config document, {name: array}) of a saved model."""
    return json.loads(Path(path, CONFIG).read_bytes()), load_file(Path(path, WEIGHTS))


def split_safetensors(blob: bytes):
    """(header dict, data bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    """A safetensors file from a header dict (any content) and raw data."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def signed_metadata(config_bytes: bytes) -> dict:
    return {"format": "sklearn_hsae", "config_sha256": hashlib.sha256(config_bytes).hexdigest()}


def forge(path, doc, tensors, *, rehash=True) -> None:
    """Write doc and tensors as a consistent pair: tensor hashes and config hash recomputed."""
    if rehash:
        doc = {**doc, "sha256": {name: sha256(a) for name, a in tensors.items()}}
    forge_raw(path, json.dumps(doc).encode(), tensors)


def forge_raw(path, config_bytes: bytes, tensors) -> None:
    """Write config.json verbatim and model.safetensors signed with its hash."""
    Path(path).mkdir(parents=True, exist_ok=True)
    Path(path, CONFIG).write_bytes(config_bytes)
    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
    save_file(arrays, Path(path, WEIGHTS), metadata=signed_metadata(config_bytes))


def forge_header(path, config_bytes: bytes, header: dict, data: bytes) -> None:
    """Write a hand-made safetensors header (signed for config_bytes) and data."""
    header = {**header, "__metadata__": signed_metadata(config_bytes)}
    Path(path).mkdir(parents=True, exist_ok=True)
    Path(path, CONFIG).write_bytes(config_bytes)
    Path(path, WEIGHTS).write_bytes(safetensors_bytes(header, data))


def write_raw(path, config_bytes: bytes, weights_bytes: bytes) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    Path(path, CONFIG).write_bytes(config_bytes)
    Path(path, WEIGHTS).write_bytes(weights_bytes)
