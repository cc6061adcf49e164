"""Flat SAE baselines: TopK, BatchTopK and Matryoshka on one module.

- TopK (Gao et al. 2024): keep the k largest ReLU pre-activations of every row.
- BatchTopK (Bussmann et al. 2024): keep the ``B * k`` largest of the whole batch while
  training, so rows may use more or fewer than k; at inference a fixed threshold (an EMA
  of the smallest activation the batch top-k kept) makes every row independent.
- Matryoshka (Bussmann et al. 2025): the loss sums the reconstruction errors of nested
  prefixes of the dictionary, so early latents learn to stand on their own.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    Codes, Dictionary, LossOutput, SAEBase, auxk_loss, centre, level_l0, native_sparse,
    normalize_rows_, pre_activations, remove_parallel_grad_, sparse_decode, squared_errors,
    tied_init_, topk_select, update_dead_counter_,
)
from .workspace import Workspace


class FlatSAE(SAEBase):
    """Encoder, unit-row decoder, biases; TopK / BatchTopK selection; no training logic."""

    cumulative: ClassVar[bool] = True  # one level: either reading holds

    def __init__(self, config, *, device=None, dtype=torch.float32):
        super().__init__()
        self.config = config
        m, d = config.n_latents, config.n_features
        kw = {"device": device, "dtype": dtype}
        self.W_enc = nn.Parameter(torch.empty(m, d, **kw))
        self.b_enc = nn.Parameter(torch.empty(m, **kw))
        self.W_dec = nn.Parameter(torch.empty(m, d, **kw))
        self.b_dec = nn.Parameter(torch.empty(d, **kw), requires_grad=not config.fixed_decoder_bias)
        self.register_buffer("tokens_since_fired", torch.zeros(m, dtype=torch.long, device=device))
        self.register_buffer("loss_scale", torch.ones((), **kw))
        self.workspace = Workspace()  # reused CPU buffers, not part of the state
        self.register_buffer("threshold", torch.zeros((), **kw))

    def integer_ranges(self) -> dict[str, tuple[int, int | None]]:
        """Valid ``[low, high)`` of every integer tensor of ``state_dict()`` (None: no bound)."""
        return {"tokens_since_fired": (0, None)}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        tied_init_(self.W_enc, self.b_enc, self.W_dec, generator)
        self.b_dec.zero_()
        self.tokens_since_fired.zero_()
        self.loss_scale.fill_(1.0)
        self.threshold.zero_()


    # ---------------------------------------------------------------- encode
    def _encode(self, x: Tensor, use_native: bool):
        """Encoder pre-activations and the selected (values, indices), each (B, k')."""
        k = self.config.k
        pre = self.workspace.get("pre", (x.shape[0], self.config.n_latents), x.dtype, x.device)
        xc, center = centre(x, self.b_dec)  # (B, d)
        enc = pre_activations(xc, self.W_enc, self.b_enc, out=pre, use_native=use_native,
                              center=center)
        if self.config.activation == "topk":
            values, indices = topk_select(enc, k)
            return enc, values, indices
        act = F.relu(enc.pre.detach())  # (B, m)
        if self.training:
            # Batch top-(B k): the smallest kept value is this batch's threshold.
            n_keep = min(k * act.shape[0], act.numel())
            cut = torch.topk(act.reshape(-1), n_keep, sorted=False).values.min()
            keep = act >= cut
            self._update_threshold(cut)
        else:
            keep = act > self.threshold
        width = max(1, int(keep.sum(dim=1).max()))  # most latents any row kept
        _, indices = torch.topk(act * keep, min(width, act.shape[1]), dim=1, sorted=False)
        values = F.relu(enc.select(indices)) * keep.gather(1, indices)
        return enc, values, indices

    @torch.no_grad()
    def _update_threshold(self, cut: Tensor) -> None:
        if not torch.isfinite(cut) or cut <= 0:  # a diverging step must not poison it
            return
        if self.threshold == 0:
            self.threshold.copy_(cut)
        else:
            self.threshold.lerp_(cut, 1 - self.config.threshold_momentum)

    def forward(self, x: Tensor) -> Codes:
        use_native = native_sparse(self.compile_mode, x)
        _, values, indices = self._encode(x, use_native)
        x_hat = sparse_decode(values, indices, self.W_dec, use_native) + self.b_dec
        return Codes([values], [indices], x_hat, [x_hat])

    # ------------------------------------------------------------------ loss
    def loss(self, x: Tensor) -> LossOutput:
        cfg = self.config
        use_native = native_sparse(self.compile_mode, x)
        enc, values, indices = self._encode(x, use_native)
        x_hat = sparse_decode(values, indices, self.W_dec, use_native) + self.b_dec
        # Matryoshka: every shorter prefix reconstructs on its own too
        parts = [sparse_decode(values * (indices < width), indices, self.W_dec, use_native)
                 + self.b_dec for width in cfg.prefixes[:-1]]  # (B, d) each
        sq_error, *sq_parts = squared_errors(x, x_hat, *parts, workspace=self.workspace)
        norm = x.shape[0] * self.loss_scale
        recon = sq_error / norm
        terms = {"recon": recon}
        total = recon
        for width, sq_part in zip(cfg.prefixes[:-1], sq_parts):
            terms[f"prefix{width}"] = sq_part / norm
            total = total + terms[f"prefix{width}"]
        update_dead_counter_(self.tokens_since_fired, indices, values)
        if cfg.aux_coef > 0:
            dead = self.tokens_since_fired > cfg.dead_tokens
            aux = auxk_loss(x, x_hat, sq_error, enc, dead, cfg.aux_k, self.W_dec, use_native=use_native)
            total = total + cfg.aux_coef * aux
            terms["auxk"] = aux
        return LossOutput(total, sq_error.detach(), level_l0([values]),
                          {k: v.detach() for k, v in terms.items()})

    def before_optimizer_step(self) -> None:
        remove_parallel_grad_(self.W_dec)

    def after_optimizer_step(self) -> None:
        normalize_rows_(self.W_dec)


    @torch.no_grad()
    def dictionary(self, out: list[Tensor] | None = None) -> Dictionary:
        components = self.W_dec.detach()
        if out is not None:
            out[0].copy_(components)
            components = out[0]
        none = torch.full((self.config.n_latents,), -1, dtype=torch.long, device=self.W_dec.device)
        return Dictionary([components], [none], [self.b_dec.detach()])
