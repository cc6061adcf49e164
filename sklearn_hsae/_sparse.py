"""Sparse codes on the device -> scipy CSR on the host."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def codes_to_csr(
    values: Tensor, indices: Tensor, n_columns: int, dtype, row_scale: Tensor | None = None
) -> sp.csr_matrix:
    """Build a CSR (B, n_columns) from per-row (values, indices), each (B, k).

    Zero values are dropped; column indices come out sorted within each row, so the
    matrix is in canonical form. ``row_scale`` (B,) multiplies each row first.
    """
    if row_scale is not None:
        values = values * row_scale[:, None]
    indices = torch.where(values != 0, indices, torch.full_like(indices, n_columns))
    indices, order = torch.sort(indices, dim=1)  # zeros sort last (column n_columns)
    values = torch.gather(values, 1, order)
    keep = indices < n_columns  # (B, k)
    counts = keep.sum(dim=1)
    indptr = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts.cpu().numpy(), out=indptr[1:])
    data = values[keep].detach().cpu().numpy().astype(dtype, copy=False)
    cols = indices[keep].cpu().numpy()
    index_dtype = np.int32 if max(n_columns, len(cols)) < 2**31 else np.int64
    return sp.csr_matrix(
        (data, cols.astype(index_dtype), indptr.astype(index_dtype)),
        shape=(values.shape[0], n_columns),
    )
