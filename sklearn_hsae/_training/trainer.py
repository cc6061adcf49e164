"""One optimiser step at a time: Adam, schedule, clipping, decoder constraints, guard.

Boilerplate that could train any of our models: it calls only the model interface
(``loss``, ``before_optimizer_step``, ``after_optimizer_step``, ``clip_groups``,
``lr_groups``).
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .._config import TrainConfig
from .adam import Adam
from .distributed import world


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the model keeps its last finite state."""


class StepStats(NamedTuple):
    """Per-step figures, kept on the device until somebody asks for them."""

    loss: Tensor
    """Scalar training loss of the step (averaged over ranks)."""
    sq_error: Tensor
    """``sum ||x - x_hat||^2`` of the main reconstruction over the batch."""
    l0: Tensor
    """(n_levels,) mean active latents per row of every level in the batch."""


def learning_rate_at(step: int, config: TrainConfig, peak: float | None = None) -> float:
    """Linear warm-up to ``peak`` (default: the config's, when it is one number), then
    cosine decay to ``lr_end_factor`` of it (or constant when streaming)."""
    if peak is None:
        (peak,) = config.peaks(1)
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.total_steps is None:
        return peak
    span = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    end = config.lr_end_factor
    return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    """Adam on a model, one minibatch at a time; its state can be saved and restored.

    Under an initialised ``torch.distributed`` group every rank takes the same steps:
    gradients are averaged with one flattened all-reduce and buffers (dead-latent
    counters, thresholds, controllers) follow rank 0 after each step, the semantics of
    torch's ``DistributedDataParallel``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig):
        self.model = model
        self.config = config
        # Parameter groups with their own learning rate (tree levels), in model order.
        groups = [[p for p in g if p.requires_grad] for g in model.lr_groups()]
        self.params = [p for g in groups for p in g]
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        if len(self.params) != len(trainable) or {id(p) for p in self.params} != trainable:
            raise ValueError("lr_groups() must hold every trainable parameter exactly once")
        # Models made of independent parts (tree levels) clip each part on its own.
        self.clip_groups = [[p for p in g if p.requires_grad] for g in model.clip_groups()]
        self.optimizer = Adam(groups, config.peaks(len(groups)), config.adam_betas, config.adam_eps)
        self.step_count = 0

    def step(self, x: Tensor) -> StepStats:
        """One optimiser step on the batch x (B, d), already scaled and on the device.

        Raises DivergenceError, before touching the weights, when the loss or the
        gradient is not finite.
        """
        peaks = self.config.peaks(len(self.optimizer.param_groups))
        for group, peak in zip(self.optimizer.param_groups, peaks):
            group["lr"] = learning_rate_at(self.step_count, self.config, peak)
        self.optimizer.zero_grad()
        self.model.train()
        out = self.model.loss(x)
        out.loss.backward()
        loss = self._synchronise(out.loss.detach())
        if not torch.isfinite(loss):
            raise DivergenceError(f"the loss is {float(loss)}")
        self.model.before_optimizer_step()
        norms = [self._clip(group) for group in self.clip_groups]
        if not all(torch.isfinite(n) for n in norms):
            raise DivergenceError("the gradient is not finite")
        self.optimizer.step()
        self.model.after_optimizer_step()
        if world()[1] > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        self.step_count += 1
        return StepStats(loss, out.sq_error, out.l0)

    def _clip(self, group: list) -> Tensor:
        grads = [p.grad for p in group if p.grad is not None]
        if not grads:
            return torch.zeros(())
        total = torch.nn.utils.get_total_norm(grads)
        # clip_grad_norm_ multiplies every gradient by its coefficient clamped to 1 on
        # every step (2.4 ms of a routed 2048x16 step at B = 4096 for a factor of 1);
        # scale only when the clamp would not give 1, the same arithmetic. The comparison
        # syncs with the device, as the finiteness check after this does anyway.
        if self.config.grad_clip > 0 and self.config.grad_clip / (total + 1e-6) < 1:
            torch.nn.utils.clip_grads_with_norm_(group, self.config.grad_clip, total)
        return total

    def _synchronise(self, loss: Tensor) -> Tensor:
        """Average gradients (and the loss) over the ranks of a distributed run."""
        size = world()[1]
        if size == 1:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = _flatten_dense_tensors([*grads, loss.reshape(1)])
        dist.all_reduce(flat)
        flat /= size
        *averaged, loss = _unflatten_dense_tensors(flat, [*grads, loss.reshape(1)])
        for p, g in zip(self.params, averaged):
            p.grad = g
        return loss.reshape(())

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step_count": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` gave; the model part may be left out."""
        if "model" in state:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step_count"])


# Below this many multiply-adds per step, torch's second thread costs more than it
# brings. Measured on a 2-core machine while other processes used the cores: a 10-epoch
# fit of a 24 x 4 routed model (d = 64, batch 512, ~1e6 per step) took 1.4-1.9 s on two
# threads and 0.23 s on one; at ~6e8 per step (1024 parents, d = 576, batch 1024) one
# thread still won under load (1.2-1.4 s vs 1.8-1.9 s), and two win when the cores are
# free, so large steps keep torch's setting.
_SMALL_STEP = 10**8


@contextlib.contextmanager
def threads_for(work: float):
    """Run tiny steps on one thread: every small op of a parallel region ends at a
    barrier, and on shared cores a thread that waits for a descheduled sibling (or
    spins, under OpenMP's default wait policy) stalls the step. Scoped: torch's thread
    count is restored afterwards. ``work``: multiply-adds per step."""
    previous = torch.get_num_threads()
    if work >= _SMALL_STEP or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _set_deterministic(mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor``.

    The public function imports inductor (and sympy, ~800 modules) only to set
    inductor's own flag: measured 3.2 s on an idle 2-core machine and 39 s of a 66 s
    first fit on a loaded one. We set the flag on inductor only when it is already
    loaded (someone compiles), and switch torch's kernels directly.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private hook: the public way
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = mode
    setter(mode, warn_only=warn_only)


@contextlib.contextmanager
def deterministic(enabled: bool):
    """Switch torch's deterministic kernels on for our own work, then restore them.

    Measured on this project's machine: without them two identical CPU fits differed by
    about 1e-7; with them they were bitwise equal.
    """
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # With deterministic algorithms on, torch also fills every new tensor with NaN
    # (``torch.utils.deterministic.fill_uninitialized_memory``) in case an op reads memory
    # it never wrote. Ours write every element they allocate, so the fill only costs time:
    # measured ~6 ms per 19 MB gradient, ~0.03 s of a routed 2048 x 16 step at B = 4096.
    get_fill = getattr(torch._C, "_get_deterministic_fill_uninitialized_memory", None)
    set_fill = getattr(torch._C, "_set_deterministic_fill_uninitialized_memory", None)
    fill = get_fill() if get_fill is not None else None
    _set_deterministic(True, warn_only=False)
    if set_fill is not None:
        set_fill(False)
    try:
        yield
    finally:
        _set_deterministic(previous, warn_only=warn_only)
        if set_fill is not None:
            set_fill(fill)
