"""The io tests' small models, and readers and forgers of model directories byte by byte.

A forger here plays the hostile author: it recomputes every hash so that a file reaches
the structural checks instead of failing on the checksum.
"""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io._files import sha256

CONFIG, WEIGHTS = "config.json", "model.safetensors"
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
    "tree-3-levels": lambda: HierarchicalSparseAutoencoder(
        architecture="tree", n_parents=4, n_children=2, n_levels=3, k=2, max_iter=2, batch_size=64,
        random_state=0,
    ),
    "nested-3-levels": lambda: HierarchicalSparseAutoencoder(
        architecture="nested", n_parents=4, n_children=2, n_levels=3, k=2, max_iter=2, batch_size=64,
        random_state=0,
    ),
    "sae-topk": lambda: SparseAutoencoder(**SAE, random_state=0),
    "sae-batchtopk-matryoshka-unit": lambda: SparseAutoencoder(
        **SAE, activation="batchtopk", matryoshka_prefixes=[3, 6], normalize="unit", random_state=0
    ),
}


def activations() -> np.ndarray:
    """(400, 16) synthetic activations, not already unit-scaled, so folding the scale matters."""
    X, *_ = make_hierarchical_activations(
        n_samples=400,
        n_features=16,
        n_parents=6,
        n_children=3,
        subspace_dim=2,
        n_active=2,
        random_state=0,
    )
    return X * 3.0 + 0.5


def read_model(path):
    """(config document, {name: array}) of a saved model."""
    return json.loads(Path(path, CONFIG).read_bytes()), load_file(Path(path, WEIGHTS))


def split_safetensors(blob: bytes):
    """(header dict, data bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    """A safetensors file from a header dict (any content) and raw data."""
    return safetensors_bytes_from_text(json.dumps(header)) + data


def safetensors_bytes_from_text(text: str) -> bytes:
    """The length and header of a safetensors file from the header's JSON text, verbatim."""
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


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
