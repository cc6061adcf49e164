"""First-letter absorption on constructed cases whose rates are known by hand (no model)."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from sklearn_hsae.metrics import first_letter_absorption


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


def test_absorption_accepts_dense_codes_from_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    tokens = np.repeat([" apple", " ant", " arm", " bee", " bat", " bus"], 20)
    X = np.eye(8)[[0] * 60 + [1] * 60] + 0.01 * rng.standard_normal((120, 8))
    pca = PCA(n_components=3).fit(X)
    r = first_letter_absorption(pca, X, tokens)
    assert r["probe_accuracy"] == 1.0 and r["main_latents"].shape == (2, 1)
