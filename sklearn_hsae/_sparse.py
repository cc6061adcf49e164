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


class RowStack:
    """Stack CSR blocks of rows into one CSR without holding the blocks and a copy.

    ``sp.vstack`` needs every block and the result in memory at once. Here each block is
    copied into arrays sized, at the first block, for ``n_rows`` rows at that block's
    largest non-zeros per row (TopK codes have the same bound in every block): pages
    that are never written are never resident, and a block that does not fit grows the
    arrays (one copy). The result's arrays are views of the first ``nnz`` entries.
    """

    def __init__(self, n_rows: int, n_columns: int):
        self.n_rows, self.n_columns = n_rows, n_columns
        self.indptr = np.zeros(n_rows + 1, dtype=np.int64)
        self.data = self.indices = None
        self.row = self.nnz = 0

    def _reserve(self, block: sp.csr_matrix) -> None:
        need = self.nnz + block.nnz
        if self.data is None:
            per_row = int(np.diff(block.indptr).max(initial=0))
            capacity = max(need, per_row * self.n_rows)
            index_dtype = np.int32 if max(self.n_columns, capacity) < 2**31 else np.int64
            self.data = np.empty(capacity, dtype=block.data.dtype)
            self.indices = np.empty(capacity, dtype=index_dtype)
        elif need > len(self.data):
            capacity = max(need, 2 * len(self.data))
            for name in ("data", "indices"):
                old = getattr(self, name)
                new = np.empty(capacity, dtype=old.dtype)
                new[: self.nnz] = old[: self.nnz]
                setattr(self, name, new)

    def add(self, block: sp.csr_matrix) -> None:
        """Append the rows of a canonical CSR block."""
        self._reserve(block)
        end = self.nnz + block.nnz
        self.data[self.nnz : end] = block.data
        self.indices[self.nnz : end] = block.indices
        rows = block.shape[0]
        self.indptr[self.row + 1 : self.row + rows + 1] = self.nnz + block.indptr[1:]
        self.row += rows
        self.nnz = end

    def result(self, dtype) -> sp.csr_matrix:
        if self.row != self.n_rows:
            raise RuntimeError(f"RowStack got {self.row} of {self.n_rows} rows.")  # a bug, not input
        if self.data is None:
            self.data = np.empty(0, dtype=dtype)
            self.indices = np.empty(0, dtype=np.int32)
        out = sp.csr_matrix((self.data[: self.nnz], self.indices[: self.nnz], self.indptr),
                            shape=(self.n_rows, self.n_columns), copy=False)
        out.has_canonical_format = True
        return out
