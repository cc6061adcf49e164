"""Loading a causal LM: by name, by directory, as an object, and the errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae.datasets import extract_activations


def test_model_argument_errors():
    with pytest.raises(ValueError, match="neither a known model name"):
        extract_activations(["a"], model="no-such-model")
    loaded = torch.nn.Linear(2, 2)
    loaded.config = None  # looks like a transformers model, but comes without its tokenizer
    with pytest.raises(TypeError, match="pass its tokenizer"):
        extract_activations(["a"], model=loaded)
    with pytest.raises(TypeError, match="must be 'smollm2-135m', a directory path"):
        extract_activations(["a"], model=3)
    with pytest.raises(ValueError, match="'layer' parameter"):
        extract_activations(["a"], layer=0)


@pytest.mark.slow
def test_any_causal_lm_by_directory_or_object(tmp_path):
    lm = load_model()
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(lm.tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    tiny = LlamaForCausalLM(config).eval()
    tiny.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    texts = ["The cat sat.", "Hello world"]
    by_path = extract_activations(texts, model=tmp_path, layer=2, max_norm=None)
    by_object = extract_activations(texts, model=tiny, tokenizer=lm.tokenizer, layer=2, max_norm=None)
    assert by_path.X.shape == (6, 32)
    np.testing.assert_array_equal(by_path.X, by_object.X)
    assert by_path.tokens.tolist() == by_object.tokens.tolist() == ["The", " cat", " sat", ".", "Hello", " world"]
    assert load_model(tmp_path).bos_id == lm.tokenizer.bos_token_id  # its own BOS
    with pytest.raises(ValueError, match=r"layer must lie in \[1, 2\]"):
        extract_activations(texts, model=tmp_path, layer=3)


def test_importing_the_package_does_not_import_transformers():
    """transformers takes seconds to import and is an extra: only loading a model needs it."""
    script = ("import sys, sklearn_hsae, sklearn_hsae.metrics, sklearn_hsae.datasets\n"
              "print(sorted(m for m in ('transformers', 'gguf', 'accelerate') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
