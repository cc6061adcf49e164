"""The training loop: optimiser, LR schedule, gradient clipping, decoder constraints,
divergence guard, data parallelism and checkpoints.

Boilerplate that could train any of our models: it only calls ``model.loss(x)``,
``model.before_optimizer_step()`` and ``model.after_optimizer_step()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ._config import TrainConfig


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the model keeps its last finite state."""


class StepStats(NamedTuple):
    """Per-step figures, kept on the device until somebody asks for them."""

    loss: Tensor
    sq_error: Tensor


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr_end_factor`` (or constant when streaming)."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.total_steps is None:
        return peak
    span = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    end = config.lr_end_factor
    return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Models made of independent parts (tree levels) clip each part on its own.
        groups = model.clip_groups() if hasattr(model, "clip_groups") else [self.params]
        self.clip_groups = [[p for p in g if p.requires_grad] for g in groups]
        self.optimizer = torch.optim.Adam(
            self.params,
            lr=config.learning_rate,
            betas=config.adam_betas,
            eps=config.adam_eps,
        )
        self.step_count = 0

    def step(self, x: Tensor) -> StepStats:
        """One optimiser step on the batch x (B, d), already scaled and on the device.

        Raises DivergenceError, before touching the weights, when the loss or the
        gradient is not finite.
        """
        lr = learning_rate_at(self.step_count, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
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
        return StepStats(loss, out.sq_error)

    def _clip(self, group: list) -> Tensor:
        grads = [p.grad for p in group if p.grad is not None]
        if not grads:
            return torch.zeros(())
        if self.config.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(group, self.config.grad_clip)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

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
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


# ---------------------------------------------------------------------------------------
# Checkpoints: safetensors for tensors, JSON for the rest; never pickle.
# ---------------------------------------------------------------------------------------
_LATEST = "latest.json"


def save_checkpoint(directory, trainer: Trainer, meta: dict) -> Path:
    """Write model, optimizer and step plus ``meta`` (JSON-able) atomically.

    The files of a checkpoint are written under temporary names and renamed into place,
    then ``latest.json`` is replaced (an atomic rename) to point at them, so a crash at
    any moment leaves the previous checkpoint intact. Older checkpoints are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"state-{trainer.step_count:012d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
    optim = trainer.optimizer.state_dict()
    slots = {}
    for index, values in optim["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
            slots.setdefault(str(index), []).append(key)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in optim["param_groups"]]
    document = {"step_count": trainer.step_count, "optimizer_slots": slots,
                "param_groups": groups, "meta": meta}
    for name, write in (
        (f"{stem}.safetensors", lambda p: save_file(tensors, p)),
        (f"{stem}.json", lambda p: Path(p).write_text(json.dumps(document))),
    ):
        _atomic(directory / name, write)
    _atomic(directory / _LATEST, lambda p: Path(p).write_text(json.dumps({"stem": stem})))
    for old in directory.glob("state-*"):
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    return directory / stem


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_checkpoint(directory) -> tuple[dict, dict] | None:
    """The newest complete checkpoint as (trainer state for ``Trainer.load_state_dict``,
    meta), or None when the directory holds none."""
    directory = Path(directory)
    pointer = directory / _LATEST
    if not pointer.exists():
        return None
    try:
        stem = json.loads(pointer.read_text())["stem"]
        document = json.loads((directory / f"{stem}.json").read_text())
        tensors = load_file(str(directory / f"{stem}.safetensors"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"The checkpoint in {directory} is unreadable ({exc}); remove it to start over.") from exc
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    state = {
        int(index): {key: tensors[f"optimizer.{index}.{key}"] for key in keys}
        for index, keys in document["optimizer_slots"].items()
    }
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in document["param_groups"]]
    trainer_state = {
        "model": model,
        "optimizer": {"state": state, "param_groups": groups},
        "step_count": document["step_count"],
    }
    return trainer_state, document["meta"]
