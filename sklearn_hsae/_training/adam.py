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
    """Adam (Kingma & Ba 2015) over a list of parameters, one group."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps,
                              "params": list(range(len(self.params)))}]
        self.state: dict[int, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for index, param in enumerate(self.params):
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
        """Restore a state dict of this class or of ``torch.optim.Adam`` (one group)."""
        (group,) = state["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(
                f"The optimizer state holds {len(group['params'])} parameters, the model {len(self.params)}."
            )
        self.param_groups = [{"lr": group["lr"], "betas": tuple(group["betas"]), "eps": group["eps"],
                              "params": list(range(len(self.params)))}]
        self.state = {}
        for index, slots in state["state"].items():
            param = self.params[int(index)]
            self.state[int(index)] = {
                "step": torch.as_tensor(slots["step"], dtype=torch.float32).detach().cpu().clone(),
                "exp_avg": slots["exp_avg"].detach().to(param.device, param.dtype).clone(),
                "exp_avg_sq": slots["exp_avg_sq"].detach().to(param.device, param.dtype).clone(),
            }
