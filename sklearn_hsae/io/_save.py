"""``save``: the model state to safetensors, everything else to JSON, both atomically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ._checks import config_from_json, undeclared_integers
from .._training.checkpoint import atomic_write
from ._files import ST_CODES, file_sha256, sha256
from ._format import BASE_FITTED, CONFIG_FILE, ESTIMATORS, FORMAT, FORMAT_VERSION, LOCAL_PARAMS
from ._format import OPTIONAL_FITTED, WEIGHTS_FILE
from ._json import to_json_value


def save(estimator, path) -> None:
    """Save a fitted estimator to the directory ``path``, without pickle.

    Writes ``path/config.json`` (parameters, model configuration, fitted scalars,
    format version, tensor hashes) and ``path/model.safetensors`` (the model weights),
    replacing earlier copies of these two files; other files in ``path`` are left
    alone. Fitted arrays derived from the weights (``components_``, ``intercept_``, ...)
    are not stored: :func:`load` recomputes them. Optimizer state is not saved (see
    :func:`load`), nor is ``checkpoint_dir``, a setting of this machine (stored as null;
    :func:`load` refuses a file that names one, so a file cannot choose where ``fit``
    writes).

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
    config = config_to_json(estimator._config)
    # The file must load: the fitted config must still be the one the parameters imply.
    config_from_json(
        estimator, config, estimator.n_features_in_, ValueError, "the fitted model config"
    )
    tensors = state_tensors(estimator)
    undeclared = undeclared_integers(estimator._new_model(estimator._config, "meta"), tensors)
    if undeclared:
        raise NotImplementedError(
            f"No valid range is declared for the integer tensors {undeclared} (the model's "
            "integer_ranges()), so load() could not check them; declare one before saving."
        )
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "estimator": cls.__name__,
        "params": params,
        "config": config,
        "fitted": stored_fitted(estimator),
        "sha256": {name: sha256(array) for name, array in sorted(tensors.items())},
    }
    config_bytes = json.dumps(document, indent=1, allow_nan=False).encode("utf-8")
    metadata = {"format": FORMAT, "config_sha256": file_sha256(config_bytes)}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Weights first: a crash between the two writes leaves new weights beside an old
    # config.json whose hash they do not record, a pair load refuses rather than mixes.
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_bytes(config_bytes))


def state_tensors(estimator) -> dict:
    """The model state as C-ordered arrays of a stored dtype, all finite."""
    tensors = {name: np.asarray(a, order="C") for name, a in estimator._model_state.items()}
    for name, array in tensors.items():  # np.asarray keeps 0-d shapes
        if array.dtype not in ST_CODES:
            raise ValueError(f"Tensor {name!r} has dtype {array.dtype}, which is not stored.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"Tensor {name!r} holds NaN or infinity; refusing to save it.")
    return tensors


def stored_fitted(estimator) -> dict:
    """The fitted values the weights do not imply, as JSON (see ``_format.BASE_FITTED``)."""
    fitted = {
        name: to_json_value(getattr(estimator, name), f"fitted attribute {name}")
        for name in BASE_FITTED
    }
    for name in OPTIONAL_FITTED:
        if hasattr(estimator, name):
            value = getattr(estimator, name)
            if name == "feature_names_in_":
                value = [str(v) for v in value]
            fitted[name] = to_json_value(value, f"fitted attribute {name}")
    return fitted


def config_to_json(config) -> dict:
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return {
        "type": type(config).__name__,
        "fields": {k: to_json_value(v, k) for k, v in fields.items()},
    }
