"""``load``: every byte of a model directory checked before a model is built from it."""

from __future__ import annotations

from pathlib import Path

import torch

from ._checks import (
    check_document,
    check_fitted_ranges,
    check_names,
    config_from_json,
    estimator_from_json,
    fitted_from_json,
    meta_model,
    numpy_dtype,
    read_state,
)
from ._files import MAX_JSON_BYTES, WeightsFile, file_sha256, read_bounded
from ._format import CONFIG_FILE, FORMAT, WEIGHTS_FILE
from ._json import InvalidModelFileError, check_keys, refuse, strict_json


def load(path, *, device=None):
    """Load an estimator saved by :func:`save`, validating every byte first.

    The checks run in this order, and the first failure raises
    :class:`InvalidModelFileError` naming the file, the field and what was expected:

    1. both files are regular files; ``config.json`` is of bounded size and strict JSON
       (no duplicate keys, NaN or integers beyond 64 bits); the safetensors library
       accepts ``model.safetensors`` (a bounded header whose byte ranges match the
       dtypes and shapes and tile the data exactly);
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
    7. the fitted arrays, recomputed from the weights (files store none), including the
       range of integer index arrays such as ``child_parent_``.

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
    with WeightsFile(path / WEIGHTS_FILE, WEIGHTS_FILE) as weights:
        check_keys(weights.metadata, f"{WEIGHTS_FILE} __metadata__", {"format", "config_sha256"})
        if weights.metadata["format"] != FORMAT:
            refuse(WEIGHTS_FILE, f"format {weights.metadata['format']!r} is not {FORMAT!r}")
        if weights.metadata["config_sha256"] != file_sha256(raw):
            refuse(
                CONFIG_FILE,
                f"its SHA-256 differs from the one {WEIGHTS_FILE} records: one of "
                "the two files was edited, damaged or comes from another save",
            )
        doc = check_document(strict_json(raw, CONFIG_FILE))
        est = estimator_from_json(doc["estimator"], doc["params"], device)
        fitted = fitted_from_json(doc["fitted"], est)
        where = f"{CONFIG_FILE} config"
        config = config_from_json(
            est, doc["config"], fitted["n_features_in_"], InvalidModelFileError, where
        )
        meta = meta_model(est, config)
        expected = {
            name: (numpy_dtype(t.dtype), tuple(t.shape)) for name, t in meta.state_dict().items()
        }
        check_names(weights.entries, doc["sha256"], expected)
        state = read_state(
            weights, expected, doc["sha256"], getattr(meta, "integer_ranges", dict)()
        )
    # Everything the torch model is built from has now been checked.
    for name, value in fitted.items():
        setattr(est, name, value)
    est._config, est._model_state = config, state
    est._export_fitted(est._model_from_state(state, torch.device("cpu")))
    check_fitted_ranges(est)
    return est
