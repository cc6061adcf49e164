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
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ._json import (
    MAX_JSON_BYTES,
    ST_CODES,
    InvalidModelFileError,
    check_keys,
    read_bounded,
    read_safetensors_header,
    refuse,
    sha256,
    strict_json,
    to_json_value,
)
from ._checks import (
    CONFIG_FILE,
    ESTIMATORS,
    FITTED_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    LOCAL_PARAMS,
    WEIGHTS_FILE,
    TensorReader,
    array_parts,
    base_fitted,
    check_document,
    check_names,
    config_from_json,
    estimator_from_json,
    meta_model,
    numpy_dtype,
    public_fitted,
    restore_fitted,
    undeclared_integers,
)
from ._saelens import saelens_export

__all__ = ["InvalidModelFileError", "export_saelens", "load", "save"]


def _file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------- save
def save(estimator, path) -> None:
    """Save a fitted estimator to the directory ``path``, without pickle.

    Writes ``path/config.json`` (parameters, model configuration, fitted scalars,
    format version, tensor hashes) and ``path/model.safetensors`` (model weights and
    fitted arrays), replacing earlier copies of these two files; other files in
    ``path`` are left alone. Optimizer state is not saved (see :func:`load`), nor is
    ``checkpoint_dir``, a setting of this machine (stored as null; :func:`load`
    refuses a file that names one, so a file cannot choose where ``fit`` writes).

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
    NotImplementedError
        If the model holds an integer tensor whose valid range it does not declare
        (``integer_ranges()``), which :func:`load` could not check.

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
    if ESTIMATORS.get(cls.__name__) is not cls:
        raise TypeError(f"save() stores {sorted(ESTIMATORS)} estimators, got {cls.__name__}.")
    check_is_fitted(estimator)
    params = {
        name: to_json_value(None if name in LOCAL_PARAMS else value, f"parameter {name}")
        for name, value in estimator.get_params(deep=False).items()
    }
    config = estimator._config
    # The file must load: the fitted config must still be the one the parameters imply.
    config_from_json(
        estimator,
        _config_to_json(config),
        estimator.n_features_in_,
        ValueError,
        "the fitted model config",
    )
    tensors, fitted = _arrays_and_scalars(estimator)
    undeclared = undeclared_integers(estimator, estimator._new_model(config, "meta"), tensors)
    if undeclared:
        raise NotImplementedError(
            f"No valid range is declared for the integer tensors {undeclared} (the model's "
            "integer_ranges() or the estimator's _integer_ranges()), so load() could not "
            "check them; declare one before saving."
        )
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


def _arrays_and_scalars(estimator) -> tuple[dict, dict]:
    """Model state and fitted arrays for safetensors; fitted scalars and lists for JSON."""
    tensors = {}
    for name, array in estimator._model_state.items():
        if name.startswith(FITTED_PREFIX):
            raise ValueError(f"Model state tensor {name!r} clashes with the fitted prefix.")
        tensors[name] = np.asarray(array, order="C")  # keeps 0-d shapes
    fitted = {}
    for name, value in sorted(public_fitted(estimator).items()):
        parts = array_parts(name, value)
        if parts is not None:
            tensors.update({FITTED_PREFIX + k: np.asarray(v, order="C") for k, v in parts.items()})
        elif name == "feature_names_in_":
            fitted[name] = [str(v) for v in value]
        else:
            fitted[name] = to_json_value(value, f"fitted attribute {name}")
    for name, array in tensors.items():
        if array.dtype not in ST_CODES:
            raise ValueError(f"Tensor {name!r} has dtype {array.dtype}, which is not stored.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"Tensor {name!r} holds NaN or infinity; refusing to save it.")
    return tensors, fitted


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
    return {
        "type": type(config).__name__,
        "fields": {k: to_json_value(v, k) for k, v in fields.items()},
    }


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
    >>> import tempfile
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
        refuse(
            CONFIG_FILE,
            f"its SHA-256 differs from the one {WEIGHTS_FILE} records: one of "
            "the two files was edited, damaged or comes from another save",
        )
    doc = check_document(strict_json(raw, CONFIG_FILE))
    est = estimator_from_json(doc["estimator"], doc["params"], device)
    scalars = base_fitted(doc["fitted"])
    config = config_from_json(
        est,
        doc["config"],
        scalars["n_features_in_"],
        InvalidModelFileError,
        f"{CONFIG_FILE} config",
    )
    meta = meta_model(est, config)
    expected = {
        name: (numpy_dtype(t.dtype), tuple(t.shape)) for name, t in meta.state_dict().items()
    }
    check_names(header, doc["sha256"], expected)
    ranges = getattr(meta, "integer_ranges", dict)()
    with TensorReader(path / WEIGHTS_FILE, header, doc["sha256"]) as reader:
        state = {name: reader.read(name, *spec, ranges) for name, spec in expected.items()}
        # Everything the torch model is built from has now been checked.
        for name, value in scalars.items():
            setattr(est, name, value)
        est._config, est._model_state = config, state
        est._export_fitted(est._model_from_state(state, torch.device("cpu")))
        restore_fitted(est, doc["fitted"], header, reader, meta)
    return est


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
      row's norm), turns all-zero rows into NaN, where we return zeros, and keeps each
      batch's norms from ``encode`` for the following ``decode`` (use ``sae(x)``);
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
    TypeError
        If ``estimator`` is not one of the package's estimators.
    ValueError
        If the level or the architecture has no SAELens form, or ``metadata`` is not JSON.

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
    if ESTIMATORS.get(type(estimator).__name__) is not type(estimator):
        raise TypeError(f"export_saelens() exports {sorted(ESTIMATORS)}, got {type(estimator)}.")
    check_is_fitted(estimator)
    if level != "parent":
        raise ValueError(
            f"level={level!r} has no SAELens form; only level='parent' (the flat "
            "TopK level) can be exported: routed children are not a flat SAE."
        )
    cfg, tensors = saelens_export(estimator, __version__)
    try:  # a copy that is surely JSON (SAELens keeps e.g. model_from_pretrained_kwargs here)
        extra = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must hold JSON values only: {exc}") from None
    cfg["metadata"] = {**cfg["metadata"], **extra}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _replace(path / "sae_weights.safetensors", lambda tmp: save_file(tensors, tmp))
    cfg_bytes = json.dumps(cfg, indent=1, allow_nan=False).encode("utf-8")
    _replace(path / "cfg.json", lambda tmp: Path(tmp).write_bytes(cfg_bytes))
