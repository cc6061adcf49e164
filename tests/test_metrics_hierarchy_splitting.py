"""SAEBench's feature-splitting count on hand-made first-letter codes."""

import numpy as np
import pytest

from sklearn_hsae.metrics import feature_splitting
from sklearn_hsae.metrics._splitting import _n_split

WORDS = [" ant", " arm", " axe", " art", " bee", " bat", " bus", " bin",
         " cat", " cow", " cup", " cab"]
TOKENS = np.repeat(WORDS, 10)  # 10 rows per word: rows 0-39 "a", 40-79 "b", 80-119 "c"


def _codes():
    """Latents 0 and 1 share "a" (alternate rows of every a-word), 2 is "b", 3 is "c"."""
    codes = np.zeros((120, 4))
    codes[0:40:2, 0] = 1.0
    codes[1:40:2, 1] = 1.0
    codes[40:80, 2] = 1.0
    codes[80:120, 3] = 1.0
    return codes


def test_split_rule_by_hand():
    # k grows while F1 beats the best so far by more than 0.03.
    assert _n_split([0.5, 0.7, 0.72, 0.9], 0.03) == 2  # 0.72 is not above 0.73
    assert _n_split([0.9, 0.9], 0.03) == 1  # one latent is never "split"
    assert _n_split([0.2, 0.4, 0.6], 0.03) == 3
    assert _n_split([0.5, 0.531], 0.03) == 2 and _n_split([0.5, 0.53], 0.03) == 1


def test_feature_splitting_by_hand():
    # Whatever words land in the test fold, half of every a-word's rows fire latent 0 and
    # half latent 1. k = 1 (latent 0 or 1): precision 1, recall 1/2, F1 2/3; k = 2: F1 1;
    # more latents ("b" or "c") add nothing. So "a" needs 2 latents; "b" and "c" need 1
    # (F1 1 at k = 1). max_k is capped at the 4 latents.
    r = feature_splitting(_codes(), None, TOKENS, cv=2, random_state=0)
    assert r["letters"].tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(r["num_split_features"], [2, 1, 1])
    np.testing.assert_allclose(r["f1"], [[2 / 3, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert sorted(r["split_latents"][0].tolist()) == [0, 1]
    assert r["split_latents"][1].tolist() == [2] and r["split_latents"][2].tolist() == [3]
    assert r["mean_num_split_features"] == pytest.approx(4 / 3)
    assert np.isnan(r["probe_f1"]).all()  # no activations: no ground-truth probe
    # A list of levels is the codes side by side.
    same = feature_splitting([_codes()[:, :2], _codes()[:, 2:]], None, TOKENS, cv=2, random_state=0)
    np.testing.assert_array_equal(same["num_split_features"], [2, 1, 1])


def test_feature_splitting_keeps_letters_the_model_represents():
    # Activations: "a" rows at e0; "b" and "c" rows both at e1, so a probe cannot tell b
    # from c. Balanced one-vs-rest probe for b: at e1, b's weight (1/2 of the total)
    # beats c's (1/4), so it says "b" on every b and c row: precision 1/2, recall 1,
    # F1 2/3; the same for c. With min_probe_f1=0.9 only "a" (F1 1) is evaluated.
    rng = np.random.default_rng(0)
    X = np.eye(3)[[0] * 40 + [1] * 80] + 0.01 * rng.standard_normal((120, 3))
    r = feature_splitting(_codes(), X, TOKENS, cv=2, min_probe_f1=0.9, random_state=0)
    assert r["letters"].tolist() == ["a"]
    assert r["probe_f1"].tolist() == [1.0]
    assert r["mean_num_split_features"] == 2.0
    r = feature_splitting(_codes(), X, TOKENS, cv=2, random_state=0)  # default 0.4 keeps all
    np.testing.assert_allclose(r["probe_f1"], [1, 2 / 3, 2 / 3])
    assert r["mean_num_split_features"] == pytest.approx(4 / 3)


def test_feature_splitting_rejects_bad_input():
    with pytest.raises(ValueError, match=r"tokens has shape \(119,\)"):
        feature_splitting(_codes(), None, TOKENS[:119])
    with pytest.raises(ValueError, match="at least two letters"):
        feature_splitting(_codes()[:40], None, TOKENS[:40])
    with pytest.raises(ValueError, match="X has 3 rows but the codes 120"):
        feature_splitting(_codes(), np.ones((3, 2)), TOKENS, cv=2)
