"""The language-model demo end to end, on a small subset of the real corpus."""

import pytest
from lm_texts import needs_gensim

from sklearn_hsae.datasets import fetch_text_activations


@needs_gensim
@pytest.mark.slow
def test_language_model_demo_on_a_small_subset(tmp_path, capsys):
    import argparse
    import re

    from sklearn_hsae._demo import run_demo

    args = argparse.Namespace(synthetic=False, n_texts=8, data_home=str(tmp_path), max_iter=3,
                              random_state=0, verbose=0)
    assert run_demo(args) == 0
    out = capsys.readouterr().out
    data = fetch_text_activations(tmp_path, layer=15, n_texts=8)  # the demo's cache
    assert f"{len(data.X)} tokens from {len(data.texts)} texts" in out
    assert f"held out {len(data.texts) // 4} texts" in out
    fvu_ = float(re.search(r"FVU (\d\.\d+)", out).group(1))
    assert 0 < fvu_ < 1  # a few steps already beat predicting the mean
    assert re.search(r"L0 parents 32\.0, children \d+\.\d", out)
    clean, spliced, zero = map(float, re.search(
        r"clean (\d+\.\d+), spliced (\d+\.\d+), zero-ablated (\d+\.\d+)", out).groups())
    assert clean < zero and clean <= spliced
