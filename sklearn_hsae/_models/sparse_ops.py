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

With ``use_native=True`` (CPU, float32/float64; the caller checks that ``native.py``'s
library is built) the backward contractions run as ``kernels.c``'s loops over the slots
sorted by latent (a counting sort, ``latent_route``): the routed child path's kernels
with one subspace row (s = 1) and one slot per tile. Each weight-gradient row is summed
in a fixed order (rows rising) on one thread, so results do not depend on the thread
count. The forward and ``grad_x`` stay ``embedding_bag``, which measured faster than
``kernels.c``'s per-row sums at s = 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native


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


class LatentRoute(NamedTuple):
    """The n = B * j slots of a (B, j) index matrix sorted by latent, stably (rows rise
    within each latent's run), in the layout of ``native.py``'s kernels (T = 1, s = 1)."""

    rows: Tensor
    """(n, 1) batch row of every sorted slot."""
    order: Tensor
    """(n,) flat slot ``b * j + i`` at every sorted position."""
    slot_pos: Tensor
    """(n,) sorted position of every flat slot (the inverse of ``order``)."""
    latent: Tensor
    """(n,) latent of every sorted slot."""
    start: Tensor
    """(m + 1,) latent p's slots are ``start[p] .. start[p + 1] - 1``."""

    def sort(self, values: Tensor) -> Tensor:
        """(B, j) values per slot -> (n, 1, 1) in sorted order."""
        return values.reshape(-1)[self.order].view(-1, 1, 1)

    def unsort(self, sorted_values: Tensor, shape: torch.Size) -> Tensor:
        return sorted_values.reshape(-1)[self.slot_pos].view(shape)


def latent_route(indices: Tensor, m: int) -> LatentRoute:
    """Counting sort of (B, j) latent ids in ``[0, m)``; IndexError names any outside."""
    active = torch.ones(indices.shape, dtype=torch.bool)
    counts, total = native.route_counts(active, indices, m)
    start = torch.zeros(m + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=start[1:])
    rows, order, slot_pos, _, latent = native.route_fill(active, indices, start, 1, total)
    return LatentRoute(rows.view(-1, 1), order, slot_pos, latent, start)


def _as_experts(weight: Tensor) -> Tensor:
    return weight.view(weight.shape[0], 1, weight.shape[1])  # (m, s = 1, d)


def _native_ok(use_native: bool, *tensors: Tensor) -> bool:
    """The native kernels take CPU float32/float64 and need at least one slot."""
    t = tensors[0]
    return (use_native and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
            and all(x.numel() > 0 for x in tensors))


class _SelectLinear(torch.autograd.Function):
    """``(x @ W.T + b)[b, indices[b, j]]`` from a precomputed ``pre``; sparse backward.

    ``center`` (d,) or None: the vector x was centred by without a graph (x = input -
    center); its gradient ``-sum_b grad_x[b]`` is ``-(sum of grad per latent) @ W``, m d
    multiply-adds instead of a (B, d) ``grad_x`` and its sum over the batch."""

    @staticmethod
    def forward(ctx, x, weight, bias, indices, pre, use_native, center):
        ctx.save_for_backward(x, weight, indices)
        ctx.use_native = use_native
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx, grad):
        x, weight, indices = ctx.saved_tensors
        grad_x = grad_w = grad_b = grad_center = None
        if ctx.needs_input_grad[0]:  # embedding_bag beats kernels.c's pair_sum (see below)
            grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[1] and ctx.use_native:
            route = latent_route(indices, weight.shape[0])
            grad_w = native.expert_outer(route.sort(grad.contiguous()), x, route.rows,
                                         route.start).view_as(weight)
        elif ctx.needs_input_grad[1]:
            grad_w = scatter_outer(indices, grad, x, weight.shape[0])
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[6]:
            per_latent = grad.new_zeros(weight.shape[0]).index_add_(
                0, indices.reshape(-1), grad.reshape(-1))  # (m,) the bias's gradient
            grad_b = per_latent if ctx.needs_input_grad[2] else None
            if ctx.needs_input_grad[6]:
                grad_center = -(per_latent @ weight)  # (d,)
        return grad_x, grad_w, grad_b, None, None, None, grad_center


class _SparseDecode(torch.autograd.Function):
    """``sum_j values[b, j] * weight[indices[b, j]]``; fast backward for both inputs."""

    @staticmethod
    def forward(ctx, values, indices, weight, use_native):
        # The forward stays embedding_bag even with use_native: kernels.c's pair_sum took
        # 5.6 ms where embedding_bag took 3.2 (B = 1024, k = 64, m = 4096, d = 576).
        ctx.use_native = use_native
        ctx.save_for_backward(values, indices, weight)
        return F.embedding_bag(indices, weight, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        values, indices, weight = ctx.saved_tensors
        grad_values = grad_w = None
        if ctx.use_native:
            route = latent_route(indices, weight.shape[0])
            grad = grad.contiguous()
            if ctx.needs_input_grad[0] and ctx.needs_input_grad[2]:
                dot, outer = native.dot_outer(route.sort(values), grad, _as_experts(weight),
                                              route.rows, route.start)
                grad_values, grad_w = route.unsort(dot, values.shape), outer.view_as(weight)
            elif ctx.needs_input_grad[0]:
                dot = native.pair_dot(grad, _as_experts(weight), route.rows, route.latent)
                grad_values = route.unsort(dot, values.shape)
            elif ctx.needs_input_grad[2]:
                grad_w = native.expert_outer(route.sort(values), grad, route.rows,
                                             route.start).view_as(weight)
            return grad_values, None, grad_w, None
        if ctx.needs_input_grad[0]:
            grad_values = gather_dots(weight, indices, grad)
        if ctx.needs_input_grad[2]:
            grad_w = scatter_outer(indices, values, grad, weight.shape[0])
        return grad_values, None, grad_w, None


def select_linear(x: Tensor, weight: Tensor, bias: Tensor, indices: Tensor, pre: Tensor,
                  use_native: bool = False, center: Tensor | None = None) -> Tensor:
    """The selected pre-activations with gradients to x, weight and bias of those only.

    x (B, d), weight (m, d), bias (m,), indices (B, j), pre (B, m) = x @ weight.T + bias
    computed without a graph -> (B, j). ``use_native``: the backward through ``kernels.c``.
    ``center`` (d,): x is ``input - center`` computed without a graph, and center gets
    the gradient that would have flowed through x (see ``_SelectLinear``).
    """
    return _SelectLinear.apply(x, weight, bias, indices, pre, _native_ok(use_native, x, indices),
                               center)


def sparse_decode(values: Tensor, indices: Tensor, weight: Tensor, use_native: bool = False) -> Tensor:
    """``sum_j values[:, j] * weight[indices[:, j]]`` -> (B, d); (B, k) codes, (m, d) weight.
    ``use_native``: the backward through ``kernels.c``."""
    use = _native_ok(use_native, weight, values) and values.dtype == weight.dtype
    return _SparseDecode.apply(values, indices, weight, use)
