"""Texts to token ids and back: input checks, BOS, length-sorted padded batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .language_model import LanguageModel


def check_texts(texts, name: str = "texts") -> list[str]:
    """A non-empty sequence of non-empty strings, as a list."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, got a single {type(texts).__name__}; "
                        f"wrap it in a list: [{name}].")
    if hasattr(texts, "ndim") and texts.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one text per row), got shape {texts.shape}.")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}.") from None
    if not texts:
        raise ValueError(f"{name} is empty: pass at least one text.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is a {type(text).__name__}, expected str.")
        if not text:
            raise ValueError(f"{name}[{i}] is an empty string: it has no tokens.")
    return [str(text) for text in texts]


def tokenize(
    lm: LanguageModel, texts: Sequence[str], max_length: int
) -> tuple[list[list[int]], int]:
    """Token ids of every text with BOS prepended, cut to ``max_length`` positions.

    Returns the id lists and how many texts were cut.
    """
    ids = lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = [[lm.bos_id, *row][:max_length] for row in ids]
    n_cut = sum(len(row) + 1 > max_length for row in ids)
    return out, n_cut


def warn_if_cut(n_cut: int, n_texts: int, max_length: int) -> None:
    """Say how many texts :func:`tokenize` cut, if any."""
    if n_cut:
        warnings.warn(
            f"{n_cut} of {n_texts} texts have more than max_length={max_length} tokens "
            "(BOS included) and were cut.",
            UserWarning,
        )


def token_strings(lm: LanguageModel, ids: np.ndarray) -> np.ndarray:
    """Every id decoded on its own (``" world"``, ``","``): readable, and for text without
    characters split across tokens the strings join back into the text."""
    unique, inverse = np.unique(ids, return_inverse=True)
    decoded = lm.tokenizer.batch_decode(
        [[int(i)] for i in unique], clean_up_tokenization_spaces=False
    )
    return np.asarray(decoded, dtype=object)[inverse.reshape(-1)]


def padded_batches(
    ids: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Length-sorted, right-padded batches: (text indices, input_ids (B, T), mask (B, T)).

    Sorting by length keeps the padding small; right padding keeps every real token at its
    true position, so position ids need no correction.
    """
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for b, i in enumerate(rows):
            input_ids[b, : len(ids[i])] = torch.as_tensor(ids[i])
            mask[b, : len(ids[i])] = 1
        yield rows, input_ids, mask
