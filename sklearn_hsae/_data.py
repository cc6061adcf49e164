"""Batches over arrays and memmaps, input scaling, and the host -> device transfer."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

SCALINGS = ("global", "unit", None)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    return dev


def iter_batches(
    n_rows: int, batch_size: int, rng: np.random.RandomState | None = None
) -> Iterator[np.ndarray | slice]:
    """Row selections of at most ``batch_size`` rows covering ``range(n_rows)`` once.

    With ``rng`` the rows are shuffled; each batch's indices are sorted so a memmap is
    read front to back.
    """
    if rng is None:
        for start in range(0, n_rows, batch_size):
            yield slice(start, min(start + batch_size, n_rows))
        return
    order = rng.permutation(n_rows)
    for start in range(0, n_rows, batch_size):
        yield np.sort(order[start : start + batch_size])


def to_device(X_rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Copy a block of rows to the device in the compute dtype (always a fresh tensor)."""
    block = np.ascontiguousarray(X_rows)
    return torch.tensor(block, dtype=dtype, device=device)


def fit_global_scale(X_sample: np.ndarray) -> float:
    """The factor that makes the mean squared row norm equal to d (paper 2's scaling)."""
    mean_sq = float(np.mean(np.einsum("ij,ij->i", X_sample, X_sample, dtype=np.float64)))
    if not np.isfinite(mean_sq) or mean_sq <= 0:
        return 1.0
    return float(np.sqrt(X_sample.shape[1] / mean_sq))


def scale_rows(x: Tensor, normalize: str | None, scale: float) -> tuple[Tensor, Tensor]:
    """Apply the input scaling; return the scaled rows and the factor back, per row.

    Returns (x_scaled (B, d), row_scale (B,)) with ``x == x_scaled * row_scale``. For
    ``"unit"`` all-zero rows stay zero.
    """
    if normalize == "unit":
        norms = x.norm(dim=1)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        return x / safe[:, None], safe
    factor = 1.0 / scale if normalize == "global" else 1.0
    row_scale = torch.full((x.shape[0],), factor, dtype=x.dtype, device=x.device)
    return (x * scale if normalize == "global" else x), row_scale
