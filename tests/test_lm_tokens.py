"""Texts in: every function checks its texts before any model loads."""

import numpy as np
import pytest

from sklearn_hsae._lm import language_model
from sklearn_hsae.datasets import ActivationExtractor, extract_activations


@pytest.mark.parametrize("texts, error, match", [
    ("one text", TypeError, "single str"),
    ([], ValueError, "texts is empty"),
    (["ok", 3], TypeError, r"texts\[1\] is a int"),
    (["ok", ""], ValueError, r"texts\[1\] is an empty string"),
    (np.array([["a", "b"]]), ValueError, "one-dimensional"),
    (42, TypeError, "must be a list of strings"),
])
def test_texts_are_checked_before_any_model_loads(texts, error, match, monkeypatch):
    monkeypatch.setattr(language_model, "_load_cached", None)  # any load attempt would fail loudly
    with pytest.raises(error, match=match):
        extract_activations(texts)
    with pytest.raises(error, match=match.replace("texts", "X")):
        ActivationExtractor().fit(texts)
