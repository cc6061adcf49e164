"""extract_activations: rows, tokens, positions and the massive-norm filter."""

import numpy as np
import pytest

from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae._lm.tokens import tokenize
from sklearn_hsae.datasets import extract_activations


@pytest.mark.slow
def test_extract_activations_rows_tokens_and_drops():
    lm = load_model()
    texts = ["Hello world, it's café time.", ". and of the moon", "Two  spaces\nand a line"]
    acts = extract_activations(texts, batch_size=2)
    ids, _ = tokenize(lm, texts, 512)
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
