"""Forward passes through the language model: reading, replacing and skipping blocks.

A block returns its residual stream either as a tensor (transformers 5) or as the first
item of a tuple (older models); every helper here accepts both forms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .language_model import LanguageModel
from .tokens import padded_batches


def residual_of(output) -> torch.Tensor:
    """The residual stream (B, T, d) inside a block's output."""
    return output[0] if isinstance(output, tuple) else output


def with_residual(output, h: torch.Tensor):
    """A block's output of the same form, carrying residual ``h`` instead."""
    return (h, *output[1:]) if isinstance(output, tuple) else h


class _StopForward(Exception):
    """Raised by a capture hook once the wanted block has run: the rest is not needed."""


@contextlib.contextmanager
def block_hook(lm: LanguageModel, layer: int, fn: Callable[[Any], Any]):
    """Call ``fn(output)`` on the raw output of block ``layer`` (a tensor or a tuple).

    When ``fn`` returns something other than None, it replaces the block's output for
    the rest of the forward pass.
    """
    handle = lm.blocks[layer - 1].register_forward_hook(lambda module, inputs, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def residual_hook(lm: LanguageModel, layer: int, fn: Callable[[torch.Tensor], Any]):
    """Call ``fn(h)`` on the residual stream after block ``layer``, h of shape (B, T, d).

    When ``fn`` returns a tensor it replaces the block's output for the rest of the
    forward pass; when it returns None the output stays as it was.
    """

    def on_output(output):
        new = fn(residual_of(output))
        return None if new is None else with_residual(output, new)

    return block_hook(lm, layer, on_output)


@contextlib.contextmanager
def skip_blocks(lm: LanguageModel, layer: int, output):
    """Blocks 1 to ``layer`` do not run: each returns ``output``, a block output.

    The blocks after ``layer`` then run on ``output`` as if the model had computed it,
    so a pass that only changes the residual after block ``layer`` costs the upper
    blocks alone. Each block's ``forward`` is shadowed on the instance and restored
    after (an instance ``forward`` of its own, as accelerate installs, included).
    """
    blocks = list(lm.blocks[:layer])
    own = [block.__dict__.get("forward") for block in blocks]
    for block in blocks:
        block.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        for block, forward in zip(blocks, own):
            del block.forward
            if forward is not None:
                block.forward = forward


@contextlib.contextmanager
def head_rows(lm: LanguageModel, index: torch.Tensor):
    """Only rows ``index`` of the final hidden states, flattened to (B * T, d), reach the
    output head, so ``logits`` come out as (len(index), vocabulary).

    The head is the largest matrix product of a small model (SmolLM2: 576 x 49152 per
    token, a fifth of the multiply-adds); padding and unscored positions skip it.
    """
    head = lm.model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{lm.name} has no output embeddings (get_output_embeddings() is None).")

    def select(module, args):
        h = args[0]
        return (h.reshape(-1, h.shape[-1])[index], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def iter_residuals(
    lm: LanguageModel, ids: Sequence[Sequence[int]], layer: int, batch_size: int, bar=None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(text index, residual (L_i, d) float32) for every text, in length-sorted order.

    Blocks after ``layer`` never run: the hook stops the forward pass once it has the
    residual, which halves the cost at the middle layer. ``bar`` (a tqdm bar), when
    given, advances by the tokens of every batch.
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
            if bar is not None:
                bar.update(int(mask.sum()))
            for b, i in enumerate(rows):
                yield i, h[b, : len(ids[i])]
