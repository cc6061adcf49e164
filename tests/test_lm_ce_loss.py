"""CE loss recovered: the ratios against the clean model, the identity and zero ablation."""

import pytest
from lm_texts import FAITH, SPACE, needs_gensim
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from sklearn_hsae import SparseAutoencoder
from sklearn_hsae._lm import corpus as _corpus
from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae._lm.tokens import tokenize
from sklearn_hsae.datasets import extract_activations
from sklearn_hsae.metrics import ce_loss_recovered


def test_metrics_reject_unfit_or_incomplete_estimators():
    with pytest.raises(ValueError, match="'estimator' parameter"):
        ce_loss_recovered(LogisticRegression(), ["a b"])
    with pytest.raises(Exception, match="not fitted"):
        ce_loss_recovered(SparseAutoencoder(), ["a b"])


@needs_gensim
@pytest.mark.slow
def test_ce_loss_recovered():
    lm = load_model()
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
    ids, _ = tokenize(lm, held_out, 512)
    assert r["n_predictions"] == sum(len(i) - 2 for i in ids)

    identity = FunctionTransformer().fit(X)
    perfect = ce_loss_recovered(identity, held_out, layer=6)
    assert perfect["ce_loss_recovered"] == 1.0 and perfect["ce_spliced"] == perfect["ce_clean"]
    assert perfect["ce_clean"] == r["ce_clean"] and perfect["ce_zero_ablation"] == r["ce_zero_ablation"]
    zero = FunctionTransformer(lambda Z: 0 * Z, inverse_func=lambda Z: 0 * Z, check_inverse=False).fit(X)
    assert ce_loss_recovered(zero, held_out, layer=6)["ce_loss_recovered"] == 0.0
