"""Thousands of corrupt, truncated and hostile model files: every one is refused.

Seeded and deterministic. Each case is written to disk and handed to ``load``; the
outcome is *refused* (``InvalidModelFileError``), *accepted* (loaded) or *crashed*
(any other exception). Every case here is invalid by construction, so both accepted
and crashed must be zero. Byte-level damage is left as is (the checksums must catch
it); semantic edits are re-signed, as a hostile author would, so they reach the
structural checks instead.
"""

import copy
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_files import (
    CONFIG,
    WEIGHTS,
    forge,
    forge_header,
    forge_raw,
    read_model,
    safetensors_bytes_from_text,
    signed_metadata,
    split_safetensors,
    write_raw,
)

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io import InvalidModelFileError, load, save
from sklearn_hsae.io._format import FORMAT_VERSION

OPTIONAL_KEYS = {("fitted", "feature_names_in_"), ("fitted", "l0_")}
SIZE_PARAMS = {
    "n_parents",
    "n_children",
    "subspace_dim",
    "k",
    "n_components",
    "max_iter",
    "batch_size",
}
SHAPING_PARAMS = {"n_parents", "n_children", "subspace_dim", "n_components"}
SIZE_DERIVED = {"dead_tokens", "eligible_tokens", "realloc_first", "realloc_max", "root_reset_step"}
BAD_PARAMS = {  # values the estimators' own validation refuses
    "k": [0, -2, 1.5, "4"],
    "n_parents": [0],
    "n_components": [0],
    "batch_size": [0],
    "learning_rate": [0, -1e-3, "fast"],
    "normalize": ["l2", True],
    "dtype": ["float16"],
    "architecture": ["tree-of-life"],
    "device": ["quantum", 7],
    "beta": [-0.1],
    "aux_coef": [-1],
    "warm_start": ["yes"],
    "activation": ["relu"],
    "verbose": [-1],
    "matryoshka_prefixes": [[], [0], [12], [6, 3], "3"],
    "random_state": ["seed"],
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, *_ = make_hierarchical_activations(
        n_samples=200,
        n_features=8,
        n_parents=4,
        n_children=2,
        subspace_dim=2,
        n_active=2,
        random_state=0,
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    models = {
        "hsae": HierarchicalSparseAutoencoder(
            n_parents=6,
            n_children=2,
            subspace_dim=2,
            k=2,
            max_iter=2,
            batch_size=50,
            random_state=0,
        ).fit(frame),
        "sae": SparseAutoencoder(
            n_components=8,
            k=2,
            activation="batchtopk",
            matryoshka_prefixes=[2, 4],
            max_iter=2,
            batch_size=50,
            normalize="unit",
            random_state=np.random.RandomState(0),
        ).fit(X),
        # Tree SAE: a reallocated tree, capacities and schedule counters to guard.
        "nested": HierarchicalSparseAutoencoder(
            architecture="nested", n_levels=3, n_parents=3, n_children=2, k=2, max_iter=2,
            batch_size=50, random_state=0,
        ).fit(X),
        # Three levels: parent-index tensors for the range checks to guard.
        "tree": HierarchicalSparseAutoencoder(
            architecture="tree",
            n_levels=3,
            n_parents=3,
            n_children=2,
            k=2,
            max_iter=2,
            batch_size=50,
            reparent_every=3,
            random_state=0,
        ).fit(X),
    }
    out = {}
    for name, est in models.items():
        path = tmp_path_factory.mktemp(name)
        save(est, path)
        meta = est._new_model(est._config, "meta")
        out[name] = {
            "config": (path / CONFIG).read_bytes(),
            "weights": (path / WEIGHTS).read_bytes(),
            "model": read_model(path),
            "ranges": meta.integer_ranges(),  # from the model's hook, as load uses it
        }
    return out


# ------------------------------------------------------------- byte damage
def byte_cases(files, rng):
    """Truncations, single-byte flips, random bytes and appended junk (not re-signed)."""
    config, weights = files["config"], files["weights"]
    header_end = 8 + int.from_bytes(weights[:8], "little")
    for name, blob in (("config", config), ("weights", weights)):
        cuts = set(range(0, 24)) | {header_end - 1, header_end, header_end + 1}
        cuts |= set(rng.integers(0, len(blob), 100).tolist())
        for cut in sorted(c for c in cuts if c < len(blob)):
            yield f"{name} truncated at {cut}", _replace(files, name, blob[:cut])
        for _ in range(150):
            pos = int(rng.integers(0, len(blob)))
            if name == "weights" and rng.random() < 0.5:
                pos = int(rng.integers(0, header_end))  # half the flips inside the header
            damaged = bytearray(blob)
            damaged[pos] ^= int(rng.integers(1, 256))
            yield f"{name} byte {pos} flipped", _replace(files, name, bytes(damaged))
        for n in (0, 1, 7, 8, 64, 4096):
            yield f"{name} replaced by {n} random bytes", _replace(files, name, rng.bytes(n))
        yield f"{name} with junk appended", _replace(files, name, blob + b"\x00junk")
        yield (
            f"{name} swapped with the other file",
            _replace(files, name, weights if name == "config" else config),
        )


def _replace(files, name, blob):
    pair = {"config": files["config"], "weights": files["weights"], name: blob}
    return lambda path: write_raw(path, pair["config"], pair["weights"])


# ------------------------------------------------------------ JSON edits
def leaves(node, path=()):
    """Every (path, value) of a JSON document, containers included; long lists sampled."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for i in sorted({0, 1, len(node) - 1} & set(range(len(node)))):
            yield from leaves(node[i], (*path, i))


def edited(doc, path, value=None, delete=False):
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def wrong_type(value):
    """A replacement of a JSON type no field at that place accepts.

    Not 12345 for a string: ``learning_rate="auto"`` would become a valid rate.
    """
    return ["x"] if isinstance(value, str) else "x"


def json_cases(files):
    """Edits of config.json re-signed so they reach the schema and value checks."""
    doc, tensors = files["model"]

    def write(new_doc):
        return lambda path: forge(path, new_doc, tensors, rehash=False)

    def write_text(text):
        return lambda path: forge_raw(
            path, text if isinstance(text, bytes) else text.encode(), tensors
        )

    for path, value in leaves(doc):
        if not path:
            continue
        yield f"{path} -> object", write(edited(doc, path, {}))
        yield f"{path} -> {wrong_type(value)!r}", write(edited(doc, path, wrong_type(value)))
        if isinstance(path[-1], str) and path[-2:] not in OPTIONAL_KEYS:
            yield f"{path} deleted", write(edited(doc, path, delete=True))
        if isinstance(value, dict):
            yield f"{path} + extra key", write(edited(doc, (*path, "zz_extra"), 0))
        if type(value) in (int, float):
            marked = json.dumps(edited(doc, path, "@@NUMBER@@"))
            for token in ("NaN", "Infinity", "-Infinity", "1e999", "9" * 30, "1" * 5000):
                yield f"{path} -> {token[:12]}", write_text(marked.replace('"@@NUMBER@@"', token))
    yield "extra top-level key", write(edited(doc, ("zz_extra",), 0))
    for version in (0, FORMAT_VERSION - 1, FORMAT_VERSION + 1, -1, float(FORMAT_VERSION),
                    str(FORMAT_VERSION), True, None):
        yield f"format_version {version!r}", write(edited(doc, ("format_version",), version))
    for fmt in ("sklearn-hsae", "", "safetensors"):
        yield f"format {fmt!r}", write(edited(doc, ("format",), fmt))
    for cls in (
        "BaseSparseAutoencoder",
        "LinearRegression",
        "os.system",
        "__import__('os')",
        "SparseAutoencoder"
        if doc["estimator"] != "SparseAutoencoder"
        else "HierarchicalSparseAutoencoder",
        doc["estimator"] + " ",
    ):
        yield f"estimator {cls!r}", write(edited(doc, ("estimator",), cls))
    for param, values in BAD_PARAMS.items():
        for value in values if param in doc["params"] else []:
            yield f"param {param}={value!r}", write(edited(doc, ("params", param), value))
    yield from _size_cases(doc, write)
    for name, fields in (("config.type", ("config", "type")),):
        for bad in (
            "TrainConfig",
            "FlatConfig" if doc["config"]["type"] == "RoutedConfig" else "RoutedConfig",
            "dict",
        ):
            yield f"{name} {bad}", write(edited(doc, fields, bad))
    text = json.dumps(doc)
    yield "duplicate key", write_text(text.replace('"params": {', '"params": {"k": 1, ', 1))
    yield "trailing garbage", write_text(text + " x")
    yield "byte-order mark", write_text(b"\xef\xbb\xbf" + text.encode())
    yield "UTF-16", write_text(text.encode("utf-16"))
    yield "invalid UTF-8", write_text(text.encode().replace(b'"params"', b'"p\xffarams"'))
    yield (
        "deep nesting",
        write_text(
            text.replace(
                '"fitted": {', '"fitted": {"d": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1
            )
        ),
    )
    for other in ("", "null", "[]", '"string"', "1", "{}"):
        yield f"config.json is {other!r}", write_text(other)


def _size_cases(doc, write):
    """Negative and huge sizes in parameters, config fields and fitted counts."""
    for key in SIZE_PARAMS & doc["params"].keys():
        yield f"param {key}=-1", write(edited(doc, ("params", key), -1))
    # subspace_dim shapes only the routed architecture: in a tree or nested model a huge
    # value is valid (unused).
    unused = {"subspace_dim"} if doc["params"].get("architecture") in ("tree", "nested") else set()
    shaping = SHAPING_PARAMS - unused
    for key in shaping & doc["params"].keys():
        yield f"param {key}=2**40", write(edited(doc, ("params", key), 2**40))
    for key, value in doc["config"]["fields"].items():
        if type(value) is int:
            # Fields derived from the training-set size or the run's length (the dead
            # window, Tree SAE's eligibility window and allocation schedule) are valid at
            # any value up to their caps: only -1 and 2**62 are corrupt there.
            for bad in (-1, 2**62) + (() if key in SIZE_DERIVED else (value + 1,)):
                yield f"config {key}={bad}", write(edited(doc, ("config", "fields", key), bad))
    for key in ("n_features_in_", "n_iter_", "n_steps_"):
        yield f"fitted {key}=-1", write(edited(doc, ("fitted", key), -1))
    yield "scale_=0", write(edited(doc, ("fitted", "scale_"), 0.0))
    yield (
        "n_features_in_ + 1",
        write(edited(doc, ("fitted", "n_features_in_"), doc["fitted"]["n_features_in_"] + 1)),
    )


# -------------------------------------------------------- tensor edits
def tensor_cases(files, rng):
    """Wrong names, shapes, dtypes and values; hashes recomputed (hostile author)."""
    doc, tensors = files["model"]

    def write(**changes):
        new = {k: v for k, v in {**tensors, **changes}.items() if v is not None}
        return lambda path: forge(path, doc, new)

    for name, array in tensors.items():
        yield f"{name} missing", write(**{name: None})
        yield (
            f"{name} renamed",
            lambda path, n=name: forge(
                path, doc, {(k + "_x" if k == n else k): v for k, v in tensors.items()}
            ),
        )
        yield f"{name} flattened + 1", write(**{name: np.zeros(array.size + 1, array.dtype)})
        yield f"{name} extra axis", write(**{name: array[None]})
        if array.ndim:
            yield f"{name} one row more", write(**{name: np.concatenate([array, array[:1]])})
            yield (
                f"{name} reversed shape",
                write(**{name: np.zeros(array.shape[::-1] + (1,), array.dtype)}),
            )
        else:
            yield f"{name} 0-d -> (1,)", write(**{name: array.reshape(1)})
        for dtype in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_):
            if np.dtype(dtype) != array.dtype:
                with np.errstate(over="ignore", invalid="ignore"):  # the cast is the damage
                    cast = array.astype(dtype)
                yield f"{name} as {np.dtype(dtype)}", write(**{name: cast})
        if array.dtype.kind == "f" and array.size:
            for bad in (np.nan, np.inf, -np.inf):
                damaged = array.copy()
                damaged.reshape(-1)[int(rng.integers(0, array.size))] = bad
                yield f"{name} with {bad}", write(**{name: damaged})
        elif array.size and array.dtype.kind != "b":  # a bool cannot hold -1 or 2
            low, high = files["ranges"][name]
            for bad in (low - 1, -(2**63)) + (() if high is None else (high, 2**63 - 1)):
                damaged = array.copy()
                damaged.reshape(-1)[int(rng.integers(0, array.size))] = bad
                yield f"{name} with {bad}", write(**{name: damaged})
    yield "extra tensor", write(extra=np.zeros(3, np.float32))
    yield "fitted extra array", write(**{"fitted.extra_": np.zeros(3, np.float32)})
    # Format 1 stored the derived arrays; the weights now decide them alone.
    yield "a derived array stored", write(**{"fitted.intercept_": np.zeros(8, np.float32)})
    some = next(n for n in tensors if not n.startswith("fitted."))
    yield "model tensor named like a fitted one", write(**{f"fitted.{some}": tensors[some]})


def header_cases(files):
    """Hand-made safetensors headers: the safetensors library, wrapped, must refuse them.

    Two forms the library reads as the very same tensors (an unknown field in an entry,
    an entry written as a list) are no damage; ``test_io.py`` checks that they load.
    """
    config = files["config"]
    header, data = split_safetensors(files["weights"])
    header.pop("__metadata__")
    name = next(iter(header))
    entry = header[name]
    begin, end = entry["data_offsets"]

    def write(new_header, new_data=data, sign=True):
        if sign:
            return lambda path: forge_header(path, config, new_header, new_data)
        return lambda path: write_raw(path, config, _raw(new_header, new_data))

    bad_entries = {
        "giant shape": {**entry, "shape": [2**31, 2**31]},
        "giant consistent": {**entry, "shape": [2**20, 2**20], "data_offsets": [0, 2**42]},
        "negative shape": {**entry, "shape": [-1] + entry["shape"][1:]}
        if entry["shape"]
        else {**entry, "shape": [-1]},
        "float shape": {**entry, "shape": [1.5]},
        "string shape": {**entry, "shape": "big"},
        "reversed offsets": {**entry, "data_offsets": [end, begin]},
        "offsets past the end": {**entry, "data_offsets": [begin, end + 10**9]},
        "negative offsets": {**entry, "data_offsets": [-8, end - begin - 8]},
        "three offsets": {**entry, "data_offsets": [begin, end, end]},
        "bf16": {**entry, "dtype": "BF16"},
        "fp8": {**entry, "dtype": "F8_E4M3"},
        "lowercase dtype": {**entry, "dtype": entry["dtype"].lower()},
        "missing dtype": {k: v for k, v in entry.items() if k != "dtype"},
        "dtype the model lacks": {**entry, "dtype": "I32" if entry["dtype"] != "I32" else "U32"},
    }
    for label, bad in bad_entries.items():
        yield f"header {label}", write({**header, name: bad})
    yield "header overlap", write({**header, "dup": dict(entry)})
    # JSON text the library parses itself: a repeated key. A repeated __metadata__ is
    # refused; of a repeated tensor name the last entry counts, here one with an extra
    # axis (the same bytes, so only the shape check against the model can refuse it).
    signed = json.dumps({**header, "__metadata__": signed_metadata(config)})
    wrong = json.dumps({**entry, "shape": [1, *entry["shape"]]})
    for label, text in (
        ("metadata twice", '{"__metadata__": {"format": "pt"}, ' + signed[1:]),
        ("tensor named twice", signed[:-1] + f', "{name}": {wrong}' + "}"),
    ):
        blob = safetensors_bytes_from_text(text) + data
        yield f"header {label}", lambda path, blob=blob: write_raw(path, config, blob)
    yield "header gap", write(header, data + b"\0" * 8)
    yield "header is a list", write([1, 2], sign=False)
    for meta in (
        {},
        {"format": "pt"},
        {"format": "sklearn_hsae"},
        {"format": 1},
        "x",
        {"format": "sklearn_hsae", "config_sha256": "0" * 64, "x": "y"},
    ):
        yield f"metadata {meta!r}", write({**header, "__metadata__": meta}, sign=False)
    for n in (0, 1, 2**32, 2**63, 2**64 - 1):
        yield (
            f"header length {n}",
            lambda path, n=n: write_raw(
                path, config, n.to_bytes(8, "little") + files["weights"][8:]
            ),
        )


def _raw(header, data):
    from model_files import safetensors_bytes

    return safetensors_bytes(header, data)


# -------------------------------------------------------------------- run
@pytest.fixture
def scratch(tmp_path):
    """One directory rewritten thousands of times, in RAM where there is a tmpfs.

    Measured here: on an ext4 disk mounted with ``discard``, rewriting two small files
    1000 times took 6.8 s; in /dev/shm 0.09 s.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="sklearn_hsae-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_corrupt_file_is_refused(saved, scratch):
    rng = np.random.default_rng(20240611)
    outcomes, crashes, accepted = Counter(), [], []
    start = time.perf_counter()
    for model, files in saved.items():
        for kind, cases in (
            ("bytes", byte_cases(files, rng)),
            ("json", json_cases(files)),
            ("tensors", tensor_cases(files, rng)),
            ("header", header_cases(files)),
        ):
            for label, write in cases:
                write(scratch)  # both files rewritten each time
                path = scratch
                try:
                    load(path)
                except InvalidModelFileError:
                    outcomes["refused"] += 1
                except Exception as exc:  # noqa: BLE001 - counting crashes is the point
                    crashes.append(f"{model}/{label}: {type(exc).__name__}: {exc}"[:300])
                else:
                    accepted.append(f"{model}/{label}")
                outcomes[f"{model}/{kind}"] += 1
    seconds = time.perf_counter() - start
    tried = outcomes["refused"] + len(crashes) + len(accepted)
    print(
        f"\nfuzz: tried={tried} refused={outcomes['refused']} accepted={len(accepted)} "
        f"crashed={len(crashes)} in {seconds:.1f}s; per kind: "
        f"{ {k: v for k, v in outcomes.items() if '/' in k} }"
    )
    assert crashes == [], "\n".join(crashes)
    assert accepted == [], "\n".join(accepted)
    assert tried >= 1000
