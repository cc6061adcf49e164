"""fetch_text_activations: the cache folder, its contents, and reading it back."""

import json

import numpy as np
import pytest
from lm_texts import needs_gensim

from sklearn_hsae._lm import corpus as _corpus
from sklearn_hsae._lm import language_model
from sklearn_hsae.datasets import fetch_text_activations, get_data_home


def test_get_data_home_and_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_HSAE_DATA", str(tmp_path / "env"))
    assert get_data_home() == str(tmp_path / "env") and (tmp_path / "env").is_dir()
    assert get_data_home(tmp_path / "arg") == str(tmp_path / "arg")
    with pytest.raises(OSError, match="download_if_missing=False"):
        fetch_text_activations(tmp_path, n_texts=1, download_if_missing=False)


@needs_gensim
@pytest.mark.slow
def test_fetch_reads_its_cache_the_second_time(tmp_path, monkeypatch):
    first = fetch_text_activations(tmp_path, layer=6, n_texts=3)
    (folder,) = (tmp_path / "text_activations").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "X.npy", "meta.json", "rows.npz", "texts.json", "tokens.json"]
    assert json.loads((folder / "meta.json").read_text())["n_tokens"] == len(first.X)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the cache exists")

    monkeypatch.setattr(language_model, "_load_cached", no_model)
    second = fetch_text_activations(tmp_path, layer=6, n_texts=3)
    np.testing.assert_array_equal(second.X, first.X)
    assert second.tokens.tolist() == first.tokens.tolist() and second.texts == first.texts
    corpus = _corpus.read_corpus(n_texts=3)
    assert second.texts == corpus["texts"] and len(second.texts) == 9
    for key in ("source", "topic", "sentiment", "group"):
        assert second[key].tolist() == corpus[key]
    assert second.source.tolist() == ["news"] * 3 + ["usenet"] * 3 + ["review"] * 3
    # Rows spell their texts (a text loses a token only to the massive-norm filter).
    spelled = ["".join(second.tokens[second.doc_index == i]) for i in range(9)]
    assert sum(s != t for s, t in zip(spelled, second.texts)) <= second.n_dropped
    labels = _corpus.token_labels(second.tokens, second.position)
    for key, value in labels.items():
        np.testing.assert_array_equal(second[key], value)
    assert second.word_start.sum() > 50 and second.has_digit.sum() >= 1


@needs_gensim
@pytest.mark.slow
def test_fetch_with_wikipedia_has_its_own_cache(tmp_path):
    data = fetch_text_activations(tmp_path, layer=6, n_texts=1, wikipedia=True)
    assert data.source.tolist() == ["news", "usenet", "review", "wikipedia"]
    assert data.topic[-1] == "Anarchism"
    (folder,) = (tmp_path / "text_activations").iterdir()
    assert folder.name.endswith("-wiki-first1")
    assert json.loads((folder / "meta.json").read_text())["wikipedia"] is True
    plain = fetch_text_activations(tmp_path, layer=6, n_texts=1)
    assert plain.source.tolist() == ["news", "usenet", "review"]
    assert len(list((tmp_path / "text_activations").iterdir())) == 2
