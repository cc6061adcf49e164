"""verbose means the same in every long step: 0 prints nothing, 1 draws a tqdm bar.

A two-block Llama with SmolLM2's tokenizer keeps these runs to a fraction of a second;
its loading goes through transformers like SmolLM2's, bars included.
"""

import re

import pytest
from lm_texts import needs_gensim
from sklearn.preprocessing import FunctionTransformer

from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae.datasets import ActivationExtractor, extract_activations, fetch_text_activations
from sklearn_hsae.metrics import ce_loss_recovered

TEXTS = ["The cat sat on the mat.", "Hello world"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_model().tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _bar(err: str, desc: str, n_tokens=None) -> bool:
    """A finished tqdm bar: its description, 100 %, a rate in tokens per second, and
    ``n_tokens`` done of as many (tqdm may print 11 as "11.0")."""
    done = n_tokens is None or re.search(rf"\b{n_tokens}(\.0)?/{n_tokens}(\.0)?\b", err)
    return desc in err and "100%" in err and "token/s" in err and bool(done)


@pytest.mark.slow
def test_quiet_by_default_and_a_bar_at_verbose_1(tiny, capfd):
    # The first use of the folder loads it: at verbose=0 transformers' bars stay hidden too.
    quiet = extract_activations(TEXTS, model=tiny, layer=2)
    assert capfd.readouterr().err == ""
    loud = extract_activations(TEXTS, model=tiny, layer=2, verbose=1)
    err = capfd.readouterr().err
    assert _bar(err, "Activations after block 2", n_tokens=11)  # tokens with BOS
    assert (loud.X == quiet.X).all()

    ActivationExtractor(model=tiny, layer=1).transform(TEXTS)
    assert capfd.readouterr().err == ""
    ActivationExtractor(model=tiny, layer=1, verbose=2).transform(TEXTS)
    assert _bar(capfd.readouterr().err, "Activations after block 1")

    identity = FunctionTransformer().fit([[0.0]])
    ce_loss_recovered(identity, TEXTS, model=tiny, layer=1)
    assert capfd.readouterr().err == ""
    r = ce_loss_recovered(identity, TEXTS, model=tiny, layer=1, verbose=1)
    err = capfd.readouterr().err
    # The clean pass and the spliced one (the ablations run on a template, uncounted).
    assert _bar(err, "CE loss recovered", n_tokens=22)
    assert r["ce_loss_recovered"] == 1.0


@needs_gensim
@pytest.mark.slow
def test_fetch_shows_its_first_extraction_only(tiny, tmp_path, capfd):
    fetch_text_activations(tmp_path / "quiet", model=tiny, layer=2, n_texts=1)
    assert capfd.readouterr().err == ""
    fetch_text_activations(tmp_path / "loud", model=tiny, layer=2, n_texts=1, verbose=1)
    assert _bar(capfd.readouterr().err, "Activations after block 2")
    fetch_text_activations(tmp_path / "loud", model=tiny, layer=2, n_texts=1, verbose=1)
    assert capfd.readouterr().err == ""  # read from the cache: nothing long to show


def test_verbose_is_validated():
    with pytest.raises(ValueError, match="'verbose' parameter"):
        extract_activations(TEXTS, verbose="yes")
    with pytest.raises(ValueError, match="'verbose' parameter"):
        ActivationExtractor(verbose=-1).fit(TEXTS)
