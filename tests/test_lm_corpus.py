"""The labelled gensim corpus: sizes, labels, cleaning, and the pickle allow-list (no model)."""

import io
import pickle
import zlib

import numpy as np
import pytest
from lm_texts import needs_gensim

from sklearn_hsae._lm import corpus as _corpus


@needs_gensim
def test_corpus_sizes_and_labels():
    c = _corpus.read_corpus()
    # Bump CORPUS_REVISION (it keys the cache) whenever these change.
    assert len(c["texts"]) == 4909
    source = np.array(c["source"])
    assert [int((source == s).sum()) for s in _corpus.SOURCES] == [2689, 2020, 200, 0]  # no wikipedia
    topic, sentiment = np.array(c["topic"], object), np.array(c["sentiment"], object)
    assert set(topic[source == "usenet"]) == {"atheism", "space"}
    assert set(topic[source != "usenet"]) == {None}
    assert sorted(sentiment[source == "review"]).count("pos") == 100
    assert set(sentiment[source != "review"]) == {None}
    usenet = [t for t, s in zip(c["texts"], source) if s == "usenet"]
    assert not any("Newsgroups:" in t or "From:" in t or "Subject:" in t for t in usenet)
    assert not any(len(t.split()) > 48 for t, s in zip(c["texts"], source) if s != "review")
    # Labels come from the target array; each post's own header agrees with it.
    for post, label in _corpus._newsgroup_posts(_corpus.gensim_test_data()):
        header = post.partition("\n\n")[0]
        line = next(x for x in header.splitlines() if x.startswith("Newsgroups:"))
        assert label in line
    small = _corpus.read_corpus(n_texts=2)
    assert small["source"] == ["news", "news", "usenet", "usenet", "review", "review"]
    assert small["texts"][:2] == c["texts"][:2]


@needs_gensim
def test_the_wikipedia_sample_is_plain_text_after_the_default_corpus():
    default = _corpus.read_corpus()
    c = _corpus.read_corpus(wikipedia=True)
    n = len(default["texts"])
    assert c["texts"][:n] == default["texts"]  # the default corpus first, unchanged
    source, topic = np.array(c["source"]), np.array(c["topic"], object)
    wiki = [t for t, s in zip(c["texts"], source) if s == "wikipedia"]
    assert len(wiki) == 19_645 and len(c["texts"]) == n + len(wiki)
    titles = set(topic[source == "wikipedia"])
    assert len(titles) == 106 and {"Anarchism", "Autism"} <= titles  # 106 articles, no redirects
    assert 400_000 < sum(len(t.split()) for t in wiki) < 450_000
    assert not any(len(t.split()) > 48 for t in wiki)
    # Markup is gone: no links, templates, bold/italic quotes, headings or table cells.
    leftovers = [t for t in wiki if any(m in t for m in ("[[", "]]", "{{", "}}", "''", "==", "<ref"))]
    assert leftovers == []
    groups = np.array(c["group"])[source == "wikipedia"]
    assert len(set(groups)) == 106 and groups.min() > max(default["group"])


def test_strip_usenet_and_split_sentences():
    post = (
        "From: someone@example.com\nNewsgroups: sci.space\nSubject: orbit\n\n"
        "In article <1@x.edu> joe@x.edu writes:\n> quoted line\n"
        "The launch slipped to May. Mail me at a.b@c.org for details!\n\n"
        "Second paragraph without a full stop\n-----\n--\nJoe, signature, 555-1234\n"
    )
    body = _corpus.strip_usenet(post)
    assert _corpus.split_sentences(body) == [
        "The launch slipped to May.", "Mail me at for details!",
        "Second paragraph without a full stop"]
    words = " ".join(f"w{i}" for i in range(100)) + "."
    chunks = _corpus.split_sentences(words)
    assert [len(c.split()) for c in chunks] == [48, 48, 4]


def test_token_labels_by_hand():
    tokens = ["The", " cat", ",", " 1999", " Mars", "'s", " ...", "\n", "ing"]
    position = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    got = _corpus.token_labels(tokens, position)
    assert got["word_start"].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert got["capitalized"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert got["has_digit"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert got["punct"].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0]
    # The first token of a text starts a word even without a leading space.
    assert _corpus.token_labels(["ing"], [1])["word_start"].tolist() == [True]


def test_newsgroup_unpickler_refuses_other_globals(tmp_path):
    evil = pickle.dumps(print, protocol=0)  # a reference to builtins.print
    (tmp_path / "mini_newsgroup").write_bytes(zlib.compress(evil))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _corpus._newsgroup_posts(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _corpus._BunchUnpickler(io.BytesIO(pickle.dumps(len, protocol=0))).load()
