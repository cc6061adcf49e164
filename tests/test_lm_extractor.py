"""ActivationExtractor: a stateless text-to-rows transformer at the head of a pipeline."""

import pickle

import numpy as np
import pytest
from lm_texts import FAITH, SPACE
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae.datasets import ActivationExtractor, extract_activations


def test_activation_extractor_is_a_plain_small_estimator():
    ext = ActivationExtractor(layer=3, pooling="last")
    assert clone(ext).get_params() == ext.get_params()
    assert len(pickle.dumps(ext)) < 1000  # no model inside
    tags = ext.__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array and not tags.requires_fit
    with pytest.raises(ValueError, match="'pooling' parameter"):
        ActivationExtractor(pooling="max").fit(["a"])


@pytest.mark.slow
def test_activation_extractor_in_a_pipeline():
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
