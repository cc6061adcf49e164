"""Adam, written out: the arithmetic of ``torch.optim.Adam`` (its default single-tensor
path, no weight decay, no amsgrad), step for step and bit for bit.

Why not ``torch.optim.Adam`` itself: its first construction imports ``torch._dynamo``
(its methods are wrapped by ``torch._disable_dynamo``), which pulls in inductor and
sympy, ~800 modules: 3 s on an idle 2-core machine before the first step of a fit, and
tens of seconds on a loaded one. A library fitting a small model in a notebook should
not pay that. The state dict has torch's layout (``state`` per parameter index with
``step``, ``exp_avg``, ``exp_avg_sq``; ``param_groups`` with ``lr``, ``betas``, ``eps``,
``params``), so checkpoints read the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Adam:
    """Adam (Kingma & Ba 2015) over groups of parameters, each group with its own rate."""

    def __init__(self, groups: list[list[nn.Parameter]], lr, betas=(0.9, 0.999), eps: float = 1e-8):
        """``groups``: lists of parameters (or one flat list: one group); ``lr``: one rate
        per group, or a number for all."""
        if groups and isinstance(groups[0], torch.Tensor):
            groups = [groups]
        rates = [lr] * len(groups) if isinstance(lr, (int, float)) else list(lr)
        if len(rates) != len(groups):
            raise ValueError(f"{len(rates)} learning rates for {len(groups)} parameter groups")
        self.params = [p for g in groups for p in g]
        self.param_groups, start = [], 0
        for group, rate in zip(groups, rates):
            self.param_groups.append({"lr": float(rate), "betas": tuple(betas), "eps": eps,
                                      "params": list(range(start, start + len(group)))})
            start += len(group)
        self.state: dict[int, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            self._step_group(group)

    def _step_group(self, group: dict) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for index in group["params"]:
            param = self.params[index]
            grad = param.grad
            if grad is None:  # no gradient this step: no update, no state (as torch)
                continue
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),  # on the host, as torch
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }
            state["step"] += 1
            step = state["step"].item()
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = lr / (1 - beta1**step)
            denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
            param.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def state_dict(self) -> dict:
        return {
            "state": {i: dict(s) for i, s in self.state.items()},
            "param_groups": [dict(g) for g in self.param_groups],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state dict of this class or of ``torch.optim.Adam``. The moments are
        per parameter (by index); this optimizer keeps its own grouping and rates, which
        the trainer sets every step, so a state saved with one group (before trees had a
        rate per level) restores too."""
        held = sum(len(group["params"]) for group in state["param_groups"])
        if held != len(self.params):
            raise ValueError(f"The optimizer state holds {held} parameters, the model {len(self.params)}.")
        (betas, eps), = {(tuple(g["betas"]), g["eps"]) for g in state["param_groups"]}
        for group in self.param_groups:
            group["betas"], group["eps"] = betas, eps
        self.state = {}
        for index, slots in state["state"].items():
            param = self.params[int(index)]
            if slots["exp_avg"].shape != param.shape:
                raise ValueError(f"The optimizer state of parameter {index} has shape "
                                 f"{tuple(slots['exp_avg'].shape)}, the parameter {tuple(param.shape)}.")
            self.state[int(index)] = {
                "step": torch.as_tensor(slots["step"], dtype=torch.float32).detach().cpu().clone(),
                "exp_avg": slots["exp_avg"].detach().to(param.device, param.dtype).clone(),
                "exp_avg_sq": slots["exp_avg_sq"].detach().to(param.device, param.dtype).clone(),
            }
