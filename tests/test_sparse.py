"""_sparse.py: per-row (values, indices) on the device -> canonical CSR on the host."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sklearn_hsae._sparse import RowStack, codes_to_csr


def test_codes_to_csr_by_hand():
    values = torch.tensor([[0.5, 0.0, 2.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.0]])
    indices = torch.tensor([[4, 1, 0], [2, 3, 4], [2, 0, 1]])
    out = codes_to_csr(values, indices, 5, np.float64, row_scale=torch.tensor([2.0, 1.0, 0.5]))
    expected = np.array([[4.0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0], [1.5, 0, 0.5, 0, 0]])
    np.testing.assert_array_equal(out.toarray(), expected)
    assert out.dtype == np.float64 and out.has_canonical_format and out.nnz == 4
    np.testing.assert_array_equal(out.indptr, [0, 2, 2, 4])


@pytest.mark.parametrize("sizes", [[3, 0, 5, 2], [1, 1, 1, 7]])  # the second grows the arrays
def test_row_stack_matches_vstack(sizes):
    rng = np.random.RandomState(0)
    blocks = []
    for i, rows in enumerate(sizes):
        dense = rng.rand(rows, 9) * (rng.rand(rows, 9) < 0.2 + 0.1 * i)
        blocks.append(sp.csr_matrix(dense.astype(np.float32)))
    stack = RowStack(sum(sizes), 9)
    for block in blocks:
        stack.add(block)
    out = stack.result(np.float32)
    expected = sp.vstack(blocks, format="csr")
    assert out.dtype == np.float32 and out.nnz == expected.nnz and out.has_canonical_format
    np.testing.assert_array_equal(out.toarray(), expected.toarray())
