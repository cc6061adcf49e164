"""Real activations: corpus, extraction, the text transformer, the cache, CE recovered, absorption.

Tests marked slow load SmolLM2-135M from the installed wheel once per session (~20 s)
and run only a few short texts through it.
"""

import importlib.util
import io
import json
import pickle
import zlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder, _corpus, _lm
from sklearn_hsae.datasets import (
    ActivationExtractor,
    extract_activations,
    fetch_text_activations,
    get_data_home,
)
from sklearn_hsae.metrics import ce_loss_recovered, first_letter_absorption

needs_gensim = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None, reason="the corpus comes from the gensim wheel"
)
SPACE = ["The shuttle reached orbit.", "Astronauts repaired the telescope.",
         "The rocket launched a satellite.", "NASA plans a mission to Mars.",
         "The probe sent images of Jupiter.", "Engineers tested the booster."]
FAITH = ["Faith needs no proof.", "He prayed in the church.", "The bible tells of God.",
         "Atheists reject belief in gods.", "The priest spoke about sin.",
         "Religion shapes moral values."]


# ---------------------------------------------------------------- corpus (no model)
@needs_gensim
def test_corpus_sizes_and_labels():
    c = _corpus.read_corpus()
    # Bump CORPUS_REVISION (it keys the cache) whenever these change.
    assert len(c["texts"]) == 4909
    source = np.array(c["source"])
    assert [int((source == s).sum()) for s in _corpus.SOURCES] == [2689, 2020, 200]
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


# ------------------------------------------------------- validation (no model needed)
@pytest.mark.parametrize("texts, error, match", [
    ("one text", TypeError, "single str"),
    ([], ValueError, "texts is empty"),
    (["ok", 3], TypeError, r"texts\[1\] is a int"),
    (["ok", ""], ValueError, r"texts\[1\] is an empty string"),
    (np.array([["a", "b"]]), ValueError, "one-dimensional"),
    (42, TypeError, "must be a list of strings"),
])
def test_texts_are_checked_before_any_model_loads(texts, error, match, monkeypatch):
    monkeypatch.setattr(_lm, "_load_cached", None)  # any load attempt would fail loudly
    with pytest.raises(error, match=match):
        extract_activations(texts)
    with pytest.raises(error, match=match.replace("texts", "X")):
        ActivationExtractor().fit(texts)


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


def test_get_data_home_and_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_HSAE_DATA", str(tmp_path / "env"))
    assert get_data_home() == str(tmp_path / "env") and (tmp_path / "env").is_dir()
    assert get_data_home(tmp_path / "arg") == str(tmp_path / "arg")
    with pytest.raises(OSError, match="download_if_missing=False"):
        fetch_text_activations(tmp_path, n_texts=1, download_if_missing=False)


def test_activation_extractor_is_a_plain_small_estimator():
    ext = ActivationExtractor(layer=3, pooling="last")
    assert clone(ext).get_params() == ext.get_params()
    assert len(pickle.dumps(ext)) < 1000  # no model inside
    tags = ext.__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array and not tags.requires_fit
    with pytest.raises(ValueError, match="'pooling' parameter"):
        ActivationExtractor(pooling="max").fit(["a"])


def test_metrics_reject_unfit_or_incomplete_estimators():
    with pytest.raises(ValueError, match="'estimator' parameter"):
        ce_loss_recovered(LogisticRegression(), ["a b"])
    with pytest.raises(Exception, match="not fitted"):
        ce_loss_recovered(SparseAutoencoder(), ["a b"])


# ------------------------------------------------------------- absorption (no model)
class _ToyCoder(TransformerMixin, BaseEstimator):
    """codes = relu(X @ encoder.T - 0.25), reconstruction = codes @ decoder."""

    def __init__(self, encoder=None, decoder=None):
        self.encoder = encoder
        self.decoder = decoder

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return sp.csr_matrix(np.maximum(np.asarray(X) @ self.encoder.T - 0.25, 0))

    def inverse_transform(self, Z):
        return np.asarray(Z @ self.decoder)


def test_absorption_on_a_constructed_case():
    """Letter a: "apple" and "ant" absorb the a-direction (1/3 of a-tokens); b: no
    absorption; c: each word has its own latent, which carries the b-direction instead
    of c's, so the main latent (cat's) misses 2/3 of c-tokens and nothing absorbs them."""
    words = {"a": ["apple", "ant", "arm", "axe", "air", "age"],
             "b": ["bee", "bat", "bus", "bed", "box", "bag"],
             "c": ["cat", "cow", "cup"]}
    vocab = [w for ws in words.values() for w in ws]
    e = np.eye(3 + len(vocab))
    u = dict(zip("abc", e[:3]))  # letter directions
    v = {w: e[3 + i] for i, w in enumerate(vocab)}  # word directions
    rng = np.random.default_rng(0)
    tokens = np.repeat([" " + w for w in vocab], 30)
    X = np.array([u[t[1]] + 0.5 * v[t[1:]] for t in tokens]) + 0.01 * rng.standard_normal((len(tokens), len(e)))
    # (encoder, decoder) per latent
    latents = [(u["a"] - 2 * v["apple"] - 2 * v["ant"], u["a"]),  # main a, silent on apple/ant
               (v["apple"], u["a"] + 0.5 * v["apple"]), (v["ant"], u["a"] + 0.5 * v["ant"]),
               (u["b"], u["b"])]
    latents += [(v[w], 0.5 * u["b"]) for w in words["c"]]  # no c-direction in any decoder
    coder = _ToyCoder(np.array([a for a, _ in latents]), np.array([b for _, b in latents])).fit(X)
    r = first_letter_absorption(coder, X, tokens)
    assert r["letters"].tolist() == ["a", "b", "c"]
    assert r["probe_accuracy"] == 1.0
    np.testing.assert_array_equal(r["n_true_positives"], [180, 180, 90])
    np.testing.assert_array_equal(r["main_latents"][:, 0], [0, 3, 4])
    np.testing.assert_allclose(r["absorption_rate_per_letter"], [1 / 3, 0, 0])
    np.testing.assert_allclose(r["main_miss_rate_per_letter"], [1 / 3, 0, 2 / 3])
    assert r["absorption_rate"] == pytest.approx(1 / 9)
    # Demanding that an absorber be aligned with the probe at cos >= 0.99 leaves none;
    # the misses stay.
    r = first_letter_absorption(coder, X, tokens, cos_threshold=0.99)
    assert r["absorption_rate"] == 0 and r["main_miss_rate"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ with the model
@pytest.fixture(scope="session")
def lm():
    return _lm.load_model()  # shared by every call below through the loader's cache


@pytest.mark.slow
@pytest.mark.parametrize("layer", [1, 15])
def test_hook_is_the_hidden_state_of_that_layer(lm, layer):
    texts = ["The cat sat on the mat.", "Hi"]
    ids, _ = _lm.encode(lm, texts, 512)
    batched = dict(_lm.iter_residuals(lm, ids, layer, batch_size=2))  # padded batch
    single = dict(_lm.iter_residuals(lm, ids, layer, batch_size=1))
    with torch.inference_mode():
        for i, row in enumerate(ids):
            hidden = lm.model(torch.tensor([row]), output_hidden_states=True).hidden_states
            assert torch.equal(single[i], hidden[layer][0])
            # Padded batches use other kernels: equal up to float32 rounding, per row.
            err = (batched[i] - hidden[layer][0]).norm(dim=1) / hidden[layer][0].norm(dim=1)
            assert err.max() < 1e-4  # measured up to 1.1e-5


@pytest.mark.slow
def test_after_the_last_block_hidden_states_adds_the_final_norm(lm):
    ids, _ = _lm.encode(lm, ["The cat sat on the mat."], 512)
    with torch.inference_mode():
        hidden = lm.model(torch.tensor(ids), output_hidden_states=True).hidden_states
        last = dict(_lm.iter_residuals(lm, ids, lm.n_layers, 1))[0]
        torch.testing.assert_close(lm.model.model.norm(last), hidden[lm.n_layers][0])


@pytest.mark.slow
def test_extract_activations_rows_tokens_and_drops(lm):
    texts = ["Hello world, it's café time.", ". and of the moon", "Two  spaces\nand a line"]
    acts = extract_activations(texts, batch_size=2)
    ids, _ = _lm.encode(lm, texts, 512)
    assert acts.X.shape == (sum(len(r) - 1 for r in ids) - 1, 576) and acts.X.dtype == np.float32
    # The '.' right after BOS is a massive-norm token: dropped and counted.
    assert acts.n_dropped == 1 and 1 not in acts.position[acts.doc_index == 1]
    assert np.linalg.norm(acts.X, axis=1).max() < 1000 and acts.position.min() == 1
    for i, text in enumerate(texts):  # tokens decode back to the text, position by position
        mine = acts.tokens[acts.doc_index == i]
        assert "".join(mine) == (text[1:] if i == 1 else text)
        assert acts.position[acts.doc_index == i].tolist() == list(range(2 if i == 1 else 1, len(ids[i])))
    again = extract_activations(texts, batch_size=2)
    np.testing.assert_array_equal(again.X, acts.X)  # deterministic
    every = extract_activations(texts, batch_size=2, exclude_bos=False, max_norm=None)
    assert len(every.X) == len(acts.X) + 1 + 3 and every.n_dropped == 0
    norms = np.linalg.norm(every.X, axis=1)
    assert np.all(norms[every.position == 0] > 1e4)  # BOS: ~2e4
    assert norms[(every.doc_index == 1) & (every.position == 1)][0] > 1e4
    keep = every.position > 0
    np.testing.assert_array_equal(every.X[keep & (norms < 1000)], acts.X)
    with pytest.raises(ValueError, match=r"layer must lie in \[1, 30\]"):
        extract_activations(["a"], layer=31)
    with pytest.warns(UserWarning, match="1 of 1 texts have more than max_length=4"):
        assert len(extract_activations(["one two three four five"], max_length=4).X) == 3


@pytest.mark.slow
def test_activation_extractor_in_a_pipeline(lm):
    texts, y = SPACE + FAITH, [0] * len(SPACE) + [1] * len(FAITH)
    pooled = ActivationExtractor(layer=6).fit_transform(texts)
    rows = extract_activations(texts, layer=6)
    for i in range(len(texts)):
        mine = rows.X[rows.doc_index == i]
        np.testing.assert_allclose(pooled[i], mine.mean(axis=0), rtol=1e-5, atol=1e-4)
    last = ActivationExtractor(layer=6, pooling="last").transform(texts)
    np.testing.assert_allclose(last[0], rows.X[rows.doc_index == 0][-1], rtol=1e-5, atol=1e-4)
    pipe = make_pipeline(
        ActivationExtractor(layer=6),
        HierarchicalSparseAutoencoder(n_parents=16, n_children=2, subspace_dim=2, k=4,
                                      max_iter=20, batch_size=4, random_state=0),
        LogisticRegression(C=10.0),
    )
    assert pipe.fit(texts, y).score(texts, y) >= 0.9
    out = make_pipeline(ActivationExtractor(layer=6)).set_output(transform="pandas").transform(SPACE)
    assert out.shape == (6, 576) and out.columns[0] == "activationextractor0"


@needs_gensim
@pytest.mark.slow
def test_fetch_reads_its_cache_the_second_time(lm, tmp_path, monkeypatch):
    first = fetch_text_activations(tmp_path, layer=6, n_texts=3)
    (folder,) = (tmp_path / "text_activations").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "X.npy", "meta.json", "rows.npz", "texts.json", "tokens.json"]
    assert json.loads((folder / "meta.json").read_text())["n_tokens"] == len(first.X)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the cache exists")

    monkeypatch.setattr(_lm, "load_model", no_model)
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
def test_ce_loss_recovered(lm):
    train = _corpus.read_corpus(n_texts=15)["texts"]
    held_out = SPACE[:3] + FAITH[:3]
    X = extract_activations(train, layer=6).X
    sae = SparseAutoencoder(n_components=128, k=16, max_iter=5, batch_size=128,
                            random_state=0).fit(X)
    r = ce_loss_recovered(sae, held_out, layer=6)
    assert r["ce_clean"] < r["ce_spliced"] < r["ce_zero_ablation"]
    assert 0 < r["ce_loss_recovered"] < 1 and r["ce_loss_recovered_mean_ablation"] < r["ce_loss_recovered"]
    rows = extract_activations(held_out, layer=6).X  # the same rows the metric spliced
    assert r["n_spliced"] == len(rows) and r["n_kept_clean"] == 0
    assert r["explained_variance"] == pytest.approx(sae.score(rows), abs=1e-4)
    ids, _ = _lm.encode(lm, held_out, 512)
    assert r["n_predictions"] == sum(len(i) - 2 for i in ids)

    identity = FunctionTransformer().fit(X)
    perfect = ce_loss_recovered(identity, held_out, layer=6)
    assert perfect["ce_loss_recovered"] == 1.0 and perfect["ce_spliced"] == perfect["ce_clean"]
    assert perfect["ce_clean"] == r["ce_clean"] and perfect["ce_zero_ablation"] == r["ce_zero_ablation"]
    zero = FunctionTransformer(lambda Z: 0 * Z, inverse_func=lambda Z: 0 * Z, check_inverse=False).fit(X)
    assert ce_loss_recovered(zero, held_out, layer=6)["ce_loss_recovered"] == 0.0


@pytest.mark.slow
def test_any_causal_lm_by_directory_or_object(lm, tmp_path):
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
    assert _lm.load_model(tmp_path).bos_id == lm.tokenizer.bos_token_id  # its own BOS
    with pytest.raises(ValueError, match=r"layer must lie in \[1, 2\]"):
        extract_activations(texts, model=tmp_path, layer=3)


def test_absorption_accepts_dense_codes_from_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    tokens = np.repeat([" apple", " ant", " arm", " bee", " bat", " bus"], 20)
    X = np.eye(8)[[0] * 60 + [1] * 60] + 0.01 * rng.standard_normal((120, 8))
    pca = PCA(n_components=3).fit(X)
    r = first_letter_absorption(pca, X, tokens)
    assert r["probe_accuracy"] == 1.0 and r["main_latents"].shape == (2, 1)


@needs_gensim
@pytest.mark.slow
def test_language_model_demo_on_a_small_subset(lm, tmp_path, capsys):
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
