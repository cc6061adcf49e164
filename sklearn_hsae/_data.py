"""Batches over arrays and memmaps, input scaling, and the host -> device transfer."""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

SCALINGS = ("global", "unit", None)
_SHUFFLE_BUFFER_BYTES = 256 * 2**20  # bounded memory for streamed (out-of-core) data
_CHECK_BLOCK_BYTES = 64 * 2**20
_PIECES = 8  # contiguous pieces per shuffle buffer


_DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"


def resolve_device(device) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"`` and ``torch.device`` objects name a device. Anything else, or a device this
    machine lacks, is a ValueError naming the options."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device={device!r} is not a device; use {_DEVICE_CHOICES}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} was requested but MPS is not available.")
    return dev


def from_torch(X):
    """A torch tensor (any device) as a host numpy array; anything else unchanged.

    float32 and float64 keep their dtype; float16 and bfloat16 become float32 (numpy
    has no bfloat16, and half precision would lose the codes' small values); integer and
    bool tensors are converted as numpy would (scikit-learn's checks then make them
    float64). The estimators' outputs are numpy / scipy whatever came in.
    """
    if not isinstance(X, torch.Tensor):
        return X
    X = X.detach()
    if X.dtype in (torch.float16, torch.bfloat16):
        X = X.to(torch.float32)
    return X.cpu().numpy()


def is_streamed(X) -> bool:
    """Read block by block, never converted whole: memmaps and sliceable stores (h5py,
    zarr, ...). In-memory arrays, frames and lists go through scikit-learn's checks."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, np.ndarray) or sp.issparse(X) or hasattr(X, "columns"):
        return False
    shape = getattr(X, "shape", None)
    return hasattr(X, "dtype") and hasattr(X, "__getitem__") and shape is not None and len(shape) == 2


def release_rows(X, start: int, stop: int) -> None:
    """Drop the file pages of rows [start, stop) of a memmap from this process.

    Reading a memmap maps every page it touches into the process, so a pass over a
    file larger than memory would count the whole file in the resident set (the pages
    stay in the kernel's page cache either way). ``MADV_DONTNEED`` unmaps them; a later
    read faults them back in from the cache, so nothing is lost. Only for read-only and
    shared (``"r"``, ``"r+"``) C-contiguous memmaps: on a copy-on-write one it would
    discard the caller's changes. Anything else is left alone.
    """
    mm = getattr(X, "_mmap", None)
    if (not isinstance(X, np.memmap) or mm is None or getattr(X, "mode", None) not in ("r", "r+")
            or not X.flags.c_contiguous or not hasattr(mm, "madvise") or stop <= start):
        return
    try:  # an advice, never an error (e.g. on a closed map)
        anchor = np.frombuffer(mm, dtype=np.uint8, count=1)  # the mapping's first byte
        base = anchor.ctypes.data
        del anchor
        first = X.ctypes.data - base + start * X.strides[0]
        last = min(X.ctypes.data - base + stop * X.strides[0], len(mm))
        first -= first % mmap.PAGESIZE  # madvise wants a page-aligned start
        if last > first:
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)
    except (OSError, ValueError):
        pass


def _block_rows(X, target_bytes: int) -> int:
    return max(1, target_bytes // max(1, X.shape[1] * np.dtype(X.dtype).itemsize))


def check_streamed(X) -> None:
    """The checks scikit-learn would make, one bounded block at a time.

    Raises ValueError / TypeError naming the problem (and the rows, for NaN or inf).
    """
    if len(X.shape) != 2:
        raise ValueError(f"Expected a 2D array, got shape {X.shape}.")
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise ValueError("Complex data not supported.")
    if kind not in "fiub":
        raise TypeError(f"X has dtype {X.dtype}; a numeric dtype is required.")
    n, d = X.shape
    if n < 1 or d < 1:
        raise ValueError(f"Found array with {n} sample(s) and {d} feature(s); at least 1 of each is required.")
    if kind != "f":
        return
    step = _block_rows(X, _CHECK_BLOCK_BYTES)
    for start in range(0, n, step):
        block = np.asarray(X[start : start + step])
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"Input X contains NaN or infinity (first in row {bad}).")
        del block
        release_rows(X, start, start + step)


def sample_rows(X, n_sample: int, rng: np.random.RandomState) -> np.ndarray:
    """Up to ``n_sample`` rows for initialisation statistics.

    Random rows of an in-memory array; for streamed data, 16 contiguous runs at random
    offsets (slicing is all a store must support, and runs read fast from disk).
    """
    n = X.shape[0]
    if n <= n_sample:
        return np.asarray(X[:n])
    if not is_streamed(X):
        return np.asarray(X[np.sort(rng.choice(n, n_sample, replace=False))])
    run = n_sample // 16
    starts = np.sort(rng.choice(n - run + 1, 16, replace=False))
    return np.concatenate([np.asarray(X[s : s + run]) for s in starts])


def iter_batches(X, batch_size: int, rng: np.random.RandomState | None = None) -> Iterator[np.ndarray]:
    """Minibatches of rows covering X once, as numpy arrays.

    Without ``rng``: consecutive slices. With ``rng``, in-memory X: a random permutation
    (rows of a batch read in sorted order). Streamed X: a shuffle buffer of about 256 MB
    filled with 8 contiguous pieces from random offsets, shuffled in memory, so memory
    stays bounded and reads stay sequential; leftover rows carry into the next buffer.
    """
    n = X.shape[0]
    if rng is None:
        for start in range(0, n, batch_size):
            yield np.asarray(X[start : start + batch_size])
            release_rows(X, start, start + batch_size)  # the consumer is done with it
        return
    if not is_streamed(X):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield X[np.sort(order[start : start + batch_size])]
        return
    piece = max(1, max(batch_size, _block_rows(X, _SHUFFLE_BUFFER_BYTES)) // _PIECES)
    starts = np.arange(0, n, piece)[rng.permutation(-(-n // piece))]
    carry = np.asarray(X[:0])
    for group in range(0, len(starts), _PIECES):
        chosen = np.sort(starts[group : group + _PIECES])
        buffer = np.concatenate([carry, *(np.asarray(X[s : s + piece]) for s in chosen)])
        for s in chosen:
            release_rows(X, s, s + piece)
        buffer = buffer[rng.permutation(len(buffer))]
        full = len(buffer) - len(buffer) % batch_size
        for start in range(0, full, batch_size):
            yield buffer[start : start + batch_size]
        carry = buffer[full:]
    if len(carry):
        yield carry


def to_device(X_rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Copy a block of rows to the device in the compute dtype (always a fresh tensor)."""
    block = np.ascontiguousarray(X_rows)
    if block.dtype.kind != "f" or block.dtype == np.float16:
        block = block.astype(np.float32 if dtype == torch.float32 else np.float64)
    return torch.tensor(block, dtype=dtype, device=device)


def output_dtype(X) -> np.dtype:
    """float32 stays float32, float64 stays float64, anything else becomes float64
    (scikit-learn's rule for ``dtype=[float64, float32]``)."""
    dtype = np.dtype(X.dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


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


def tree_to_numpy(tree):
    """Nested dicts / lists of tensors -> the same with numpy arrays on the host (copies)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: tree_to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_to_numpy(v) for v in tree)
    return tree


def tree_to_device(tree, device):
    """Nested dicts / lists of numpy arrays or tensors -> tensors on ``device``.

    numpy arrays are copied first, so the tensors never share memory with fitted
    attributes a caller might still hold.
    """
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy()).to(device)
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: tree_to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_to_device(v, device) for v in tree)
    return tree
