"""The estimator under evaluation, as the language-model metrics see it."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted


def check_autoencoder(estimator) -> None:
    """A fitted estimator with transform and inverse_transform, or a clear error."""
    for method in ("transform", "inverse_transform"):
        if not callable(getattr(estimator, method, None)):
            raise TypeError(f"estimator must have {method}(); {type(estimator).__name__} has not.")
    check_is_fitted(estimator)


def reconstruct(estimator, rows: np.ndarray) -> np.ndarray:
    """``inverse_transform(transform(rows))`` as float32, shape-checked."""
    out = np.asarray(estimator.inverse_transform(estimator.transform(rows)), dtype=np.float32)
    if out.shape != rows.shape:
        raise ValueError(
            f"inverse_transform(transform(X)) has shape {out.shape}, expected {rows.shape}: "
            "was the estimator fitted on this model's activations?"
        )
    return out
