"""Autograd functions whose backward passes touch only the active latents.

A TopK SAE's gradients are sparse: only the k selected encoder rows and the k decoder
rows of a sample get gradient. Dense autograd still multiplies full (B, m) matrices in
the backward; these functions do O(B k d) work instead (the idea behind sparsify's
fused encoder), using three measured-fast primitives:

- ``embedding_bag`` (weighted gather-sum of table rows per sample), for ``grad_x``;
- a COO ``torch.sparse.mm`` (P x B sparse times B x d dense), for weight gradients;
- the per-sample-weight backward of ``embedding_bag``, a sampled dense-dense product
  (one dot per (sample, index)), for gradients of the code values.

On 2 CPU threads, with B = 4096, k * 4 = 128 indices per row and d = 576, a COO
``sparse.mm`` took 0.16 s where ``index_add_`` on the same rows took 1.8 s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _bag_offsets(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Offsets and bag of each entry for a (B, m) index matrix, flattened."""
    B, m = indices.shape
    offsets = torch.arange(0, B * m, m, device=indices.device)
    bag = torch.arange(B, device=indices.device).repeat_interleave(m)
    return offsets, bag


def gather_dots(table: Tensor, indices: Tensor, rows: Tensor) -> Tensor:
    """``out[b, j] = table[indices[b, j]] . rows[b]`` -> (B, m), without a (B, m, d) copy."""
    offsets, bag = _bag_offsets(indices)
    out = torch.ops.aten._embedding_bag_per_sample_weights_backward(
        rows.contiguous(), table, indices.reshape(-1), offsets, bag, 0, -1
    )
    return out.view(indices.shape)


def scatter_outer(indices: Tensor, values: Tensor, rows: Tensor, n_table: int) -> Tensor:
    """``out[i] = sum_{(b, j): indices[b, j] = i} values[b, j] * rows[b]`` -> (n_table, d)."""
    B, m = indices.shape
    bag = torch.arange(B, device=indices.device).repeat_interleave(m)
    coo = torch.sparse_coo_tensor(  # indices are in range by construction
        torch.stack([indices.reshape(-1), bag]), values.reshape(-1), (n_table, B),
        check_invariants=False,
    )
    return torch.sparse.mm(coo, rows)


class _SelectLinear(torch.autograd.Function):
    """``(x @ W.T + b)[b, indices[b, j]]`` from a precomputed ``pre``; sparse backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, indices, pre):
        ctx.save_for_backward(x, weight, indices)
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx, grad):
        x, weight, indices = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[1]:
            grad_w = scatter_outer(indices, grad, x, weight.shape[0])
        if ctx.needs_input_grad[2]:
            grad_b = grad.new_zeros(weight.shape[0]).index_add_(0, indices.reshape(-1), grad.reshape(-1))
        return grad_x, grad_w, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """``sum_j values[b, j] * weight[indices[b, j]]``; fast backward for both inputs."""

    @staticmethod
    def forward(ctx, values, indices, weight):
        ctx.save_for_backward(values, indices, weight)
        return F.embedding_bag(indices, weight, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        values, indices, weight = ctx.saved_tensors
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_values = gather_dots(weight, indices, grad)
        if ctx.needs_input_grad[2]:
            grad_w = scatter_outer(indices, values, grad, weight.shape[0])
        return grad_values, None, grad_w


def select_linear(x: Tensor, weight: Tensor, bias: Tensor, indices: Tensor, pre: Tensor) -> Tensor:
    """The selected pre-activations with gradients to x, weight and bias of those only.

    x (B, d), weight (m, d), bias (m,), indices (B, j), pre (B, m) = x @ weight.T + bias
    computed without a graph -> (B, j).
    """
    return _SelectLinear.apply(x, weight, bias, indices, pre)


def sparse_decode(values: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
    """``sum_j values[:, j] * weight[indices[:, j]]`` -> (B, d); (B, k) codes, (m, d) weight."""
    return _SparseDecode.apply(values, indices, weight)
