"""Forward passes through the language model: residual hooks, residuals, next-token losses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .language_model import LanguageModel
from .tokens import padded_batches


class _StopForward(Exception):
    """Raised by a capture hook once the wanted block has run: the rest is not needed."""


@contextlib.contextmanager
def residual_hook(lm: LanguageModel, layer: int, fn: Callable[[torch.Tensor], Any]):
    """Call ``fn(h)`` on the residual stream after block ``layer``, h of shape (B, T, d).

    When ``fn`` returns a tensor it replaces the block's output for the rest of the
    forward pass; when it returns None the output stays as it was.
    """

    def hook(module, inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        new = fn(h)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = lm.blocks[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def iter_residuals(
    lm: LanguageModel, ids: Sequence[Sequence[int]], layer: int, batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(text index, residual (L_i, d) float32) for every text, in length-sorted order.

    Blocks after ``layer`` never run: the hook stops the forward pass once it has the
    residual, which halves the cost at the middle layer.
    """
    captured = {}

    def capture(h):
        captured["h"] = h
        raise _StopForward

    with residual_hook(lm, layer, capture), torch.inference_mode():
        for rows, input_ids, mask in padded_batches(ids, batch_size, lm.bos_id):
            try:
                lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            except _StopForward:
                pass
            h = captured.pop("h").float()  # (B, T, d)
            for b, i in enumerate(rows):
                yield i, h[b, : len(ids[i])]


def next_token_losses(
    lm: LanguageModel,
    ids: Sequence[Sequence[int]],
    batch_size: int,
    layer: int | None = None,
    patch: Callable[[list[int], torch.Tensor], torch.Tensor | None] | None = None,
) -> list[np.ndarray]:
    """Per text, the cross-entropy (nats) of predicting token p + 1 from positions <= p.

    Entry p of text i's array (length L_i - 1) scores the prediction made at position p.
    ``patch(rows, h)`` sees the residual after block ``layer`` of the batch holding texts
    ``rows`` and may return a replacement for it.
    """
    losses: list[np.ndarray | None] = [None] * len(ids)
    current: dict = {}
    hook = (
        residual_hook(lm, layer, lambda h: patch(current["rows"], h))
        if patch is not None
        else contextlib.nullcontext()
    )
    with hook, torch.inference_mode():
        for rows, input_ids, mask in padded_batches(ids, batch_size, lm.bos_id):
            current["rows"] = rows
            logits = lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(  # (B, T - 1)
                logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none"
            )
            for b, i in enumerate(rows):
                losses[i] = nll[b, : len(ids[i]) - 1].double().numpy().copy()
    return losses
