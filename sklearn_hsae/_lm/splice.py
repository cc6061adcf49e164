"""The forward passes behind CE loss recovered, none of them done twice.

Where the time went (SmolLM2-135M, layer 15, 40 held-out texts, two CPU cores,
torch.profiler): the plain method ran the whole model four times (clean, spliced, zero
and mean ablation); matrix products took 75 % of it, the output head (576 x 49152 per
token) about 30 % of those, and a float32 cross-entropy over logits laid out
(B, vocabulary, T) 15 % of the total (it was also biased by -1.4e-4 nats per token
against float64; on contiguous (N, vocabulary) logits, -1.6e-5). Here:

* the **clean** pass runs once, keeping the output of block ``layer`` of every batch;
* the **spliced** pass starts from that output (:func:`~.forward.skip_blocks`): the
  blocks up to ``layer`` are the same in every condition and do not run again;
* a condition that writes **one vector** into every intervened position (zero and mean
  ablation) does not depend on the text at all: what a causal model computes at
  position p depends only on positions <= p, and here those hold the same BOS state at
  position 0 (its own context is itself alone) and the same vector after it. One
  sequence as long as the longest text, a *template*, gives the loss of every text at
  every position; only batches with a text that keeps a massive-norm position clean
  run on their own (from block ``layer``);
* only scored positions reach the output head (:func:`~.forward.head_rows`), and the
  cross-entropy runs on contiguous logits.

On 100 held-out texts (2,661 predictions) this took 28-52 s against 78-109 s for the
plain method, interleaved in one process on a loaded machine (2.1-3.1x per pair), with
every CE figure within 1.3e-4 nats of it. It assumes what holds for decoder-only
transformers: the blocks after ``layer`` see the text only through the residual stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .forward import block_hook, head_rows, residual_hook, residual_of, skip_blocks, with_residual
from .language_model import LanguageModel
from .tokens import padded_batches


@dataclass(eq=False)
class Batch:
    """One length-sorted, right-padded batch and the predictions scored in it."""

    texts: list[int]
    """Text indices, one per row."""
    input_ids: torch.Tensor
    """(B, T) token ids, right-padded."""
    mask: torch.Tensor
    """(B, T) attention mask: 1 on real tokens."""
    position: torch.Tensor
    """(N,) position p of each scored prediction, ``1 <= p <= L_b - 2`` (the prediction
    at position 0 sees only the untouched BOS; the last position has no target)."""
    scored: torch.Tensor
    """(N,) the same predictions as flat positions ``b * T + p``."""
    targets: torch.Tensor
    """(N,) the token each scored position predicts, ``input_ids[b, p + 1]``."""
    owner: torch.Tensor
    """(N,) the text index of each scored position."""
    clean_output: Any = None
    """Block ``layer``'s clean output (tensor or tuple), set by :func:`clean_pass`."""


def make_batches(ids: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """The batches of ``padded_batches``, with their scored positions and targets."""
    batches = []
    for texts, input_ids, mask in padded_batches(ids, batch_size, pad_id):
        width = input_ids.shape[1]
        lengths = mask.sum(1, keepdim=True)  # (B, 1)
        position = torch.arange(width)  # (T,)
        scored = (position >= 1) & (position <= lengths - 2)  # (B, T)
        b, p = torch.nonzero(scored, as_tuple=True)  # (N,) each
        batches.append(Batch(
            texts=texts, input_ids=input_ids, mask=mask, position=p, scored=b * width + p,
            targets=input_ids[b, p + 1], owner=torch.as_tensor(texts)[b]))
    return batches


def _loss_sums(lm: LanguageModel, batch: Batch, n_texts: int) -> torch.Tensor:
    """Per text, the summed cross-entropy (float64, nats) of its scored predictions.

    Call inside the context that sets the condition (hooks, skipped blocks).
    """
    with head_rows(lm, batch.scored):
        out = lm.model(input_ids=batch.input_ids, attention_mask=batch.mask, use_cache=False)
    logits = out.logits  # (N, V)
    nll = F.cross_entropy(logits.float(), batch.targets, reduction="none")  # (N,)
    return torch.zeros(n_texts, dtype=torch.float64).index_add_(0, batch.owner, nll.double())


def clean_pass(lm: LanguageModel, batches: list[Batch], layer: int, n_texts: int,
               bar) -> torch.Tensor:
    """Clean loss sums per text; keeps each batch's output of block ``layer``."""
    sums = torch.zeros(n_texts, dtype=torch.float64)
    kept = []

    def keep(output):
        # A copy: the next block may update its input in place. The pass goes on as is.
        kept.append(with_residual(output, residual_of(output).clone()))

    with block_hook(lm, layer, keep), torch.inference_mode():
        for batch in batches:
            sums += _loss_sums(lm, batch, n_texts)
            batch.clean_output = kept.pop()
            bar.update(int(batch.mask.sum()))
    return sums


def residuals(batch: Batch) -> list[np.ndarray]:
    """The clean residual (L_i, d) float32 of every text of a batch, as views."""
    h = residual_of(batch.clean_output).float()  # (B, T, d)
    return [h[b, : int(n)].numpy() for b, n in enumerate(batch.mask.sum(1))]


def condition_sums(lm, batches, layer: int, where: list[np.ndarray], values: np.ndarray,
                   n_texts: int, bar) -> torch.Tensor:
    """Loss sums per text with the intervened positions of every text set to ``values``.

    ``values`` holds one row per intervened position (text after text, in position
    order: each batch then runs its upper blocks, which ``bar`` expects) or a single
    vector (d,) for all of them (a template, and the batches of texts that keep a
    position clean).
    """
    expected = batches if values.ndim == 2 else []
    if values.ndim == 2 and len(values) and np.all(values == values[0]):
        values = values[0]  # one vector after all (a constant estimator): one template
    sums = torch.zeros(n_texts, dtype=torch.float64)
    own = batches
    if values.ndim == 1:
        values = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0: one zero
        own = [batch for batch in batches if any(not where[i][1:].all() for i in batch.texts)]
        templated = np.ones(n_texts, dtype=bool)
        templated[[i for batch in own for i in batch.texts]] = False
        sums += _template_sums(lm, batches, layer, torch.from_numpy(values), templated)
    bar.total += sum(int(b.mask.sum()) for b in own) - sum(int(b.mask.sum()) for b in expected)
    bar.refresh()
    return sums + _spliced_sums(lm, own, layer, where, values, n_texts, bar)


def _spliced_sums(lm, batches, layer: int, where, values, n_texts: int, bar) -> torch.Tensor:
    """Loss sums per text of ``batches``, run from block ``layer`` on their clean output
    with ``values`` (rows, or one vector) written into the intervened positions."""
    sums = torch.zeros(n_texts, dtype=torch.float64)
    offsets = np.cumsum([0] + [int(w.sum()) for w in where])
    with torch.inference_mode():
        for batch in batches:
            h = residual_of(batch.clean_output).clone()  # (B, T, d)
            for b, i in enumerate(batch.texts):
                block = values if values.ndim == 1 else values[offsets[i] : offsets[i + 1]]
                slots = torch.from_numpy(np.flatnonzero(where[i]))
                h[b, slots] = torch.tensor(block, dtype=h.dtype)  # (n_slots, d) or (d,)
            with skip_blocks(lm, layer, with_residual(batch.clean_output, h)):
                sums += _loss_sums(lm, batch, n_texts)
            bar.update(int(batch.mask.sum()))
    return sums


def _template_sums(lm, batches, layer: int, vector: torch.Tensor,
                   templated: np.ndarray) -> torch.Tensor:
    """Loss sums of the texts where ``templated`` is True when every position >= 1
    holds ``vector`` after block ``layer``, read off one template sequence (see the
    module docstring)."""
    sums = torch.zeros(len(templated), dtype=torch.float64)
    owner = torch.cat([batch.owner for batch in batches])  # (N,) over all batches
    keep = torch.from_numpy(templated)[owner]
    if not keep.any():
        return sums
    position = torch.cat([batch.position for batch in batches])[keep]
    targets = torch.cat([batch.targets for batch in batches])[keep]
    length = int(position.max()) + 2  # BOS, ..., the last scored position and its target
    input_ids = torch.full((1, length), lm.bos_id, dtype=torch.long)  # overwritten after BOS

    def fill(h):
        new = h.clone()  # (1, length, d)
        new[:, 1:] = vector.to(h.dtype)
        return new

    scored = torch.arange(1, length - 1)
    with residual_hook(lm, layer, fill), head_rows(lm, scored), torch.inference_mode():
        logits = lm.model(input_ids=input_ids, use_cache=False).logits  # (length - 2, V)
        nll = -torch.log_softmax(logits.float(), dim=1)  # the loss at p of every target
    return sums.index_add_(0, owner[keep], nll[position - 1, targets].double())
