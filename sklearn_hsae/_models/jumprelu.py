"""JumpReLU with straight-through threshold gradients (Rajamanoharan et al. 2024).

``JumpReLU(z) = z * H(z - theta)`` has no useful gradient with respect to the threshold
theta. The pseudo-derivative replaces the Heaviside's delta by a rectangle kernel of
width ``bandwidth``: ``d/dtheta H(z - theta) ~ -K((z - theta) / bandwidth) / bandwidth``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _kernel(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        # d/dtheta [z H(z - theta)] ~ -theta K / bandwidth
        grad_threshold = -(threshold * _kernel(pre, threshold, ctx.bandwidth) * grad).sum(0)
        return grad_pre, grad_threshold, None


class _StepCount(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype).sum(dim=1)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_threshold = -(_kernel(pre, threshold, ctx.bandwidth) * grad[:, None]).sum(0)
        return None, grad_threshold, None


def jump_relu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre * (pre > threshold)``; pre (B, n), threshold (n,) -> (B, n)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def count_active(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """Active features per row, ``sum_i H(pre_i - theta_i)`` -> (B,), STE to theta."""
    return _StepCount.apply(pre, threshold, bandwidth)
