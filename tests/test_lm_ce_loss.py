"""CE loss recovered: the ratios against the clean model, the identity and zero ablation."""

import numpy as np
import pytest
import torch
from lm_texts import FAITH, SPACE, needs_gensim
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from sklearn_hsae import SparseAutoencoder
from sklearn_hsae._lm import corpus as _corpus
from sklearn_hsae._lm.forward import residual_hook
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


def _plain_ce(lm, estimator, texts, layer, max_norm=1000.0):
    """The four CE figures the plain way: the whole model for every condition, one text
    at a time (no padding, no skipped blocks, no template), log-softmax in float64."""
    ids, _ = tokenize(lm, texts, 512)

    def run(row, fill=None):
        seen = {}

        def hook(h):
            seen["h"] = h[0].clone()
            return None if fill is None else fill(h)

        with residual_hook(lm, layer, hook), torch.inference_mode():
            logits = lm.model(torch.tensor([row])).logits[0].double()  # (L, V)
        nll = -torch.log_softmax(logits, dim=1)[torch.arange(1, len(row) - 1), row[2:]]
        return float(nll.sum()), seen["h"].numpy()

    clean = [run(row) for row in ids]
    where = [(np.arange(len(h)) >= 1) & (np.linalg.norm(h, axis=1) <= max_norm) for _, h in clean]
    rows = np.concatenate([h[ok] for (_, h), ok in zip(clean, where)])
    recon = estimator.inverse_transform(estimator.transform(rows)).astype(np.float32)
    offsets = np.cumsum([0] + [int(ok.sum()) for ok in where])

    def condition(values):
        total = 0.0
        for i, row in enumerate(ids):
            def fill(h, i=i):
                new = h.clone()
                new[0, torch.from_numpy(np.flatnonzero(where[i]))] = torch.tensor(
                    values[offsets[i] : offsets[i + 1]])
                return new
            total += run(row, fill)[0]
        return total

    mean = np.broadcast_to(rows.mean(axis=0, dtype=np.float64).astype(np.float32), rows.shape)
    sums = {"ce_clean": sum(s for s, _ in clean), "ce_spliced": condition(recon),
            "ce_zero_ablation": condition(np.zeros_like(rows)), "ce_mean_ablation": condition(mean)}
    n = sum(len(row) - 2 for row in ids)
    return {key: value / n for key, value in sums.items()}


@pytest.mark.slow
def test_batches_skipped_blocks_and_templates_give_the_plain_figures():
    """Texts of 2 to 20 tokens, one with a massive-norm '.' right after BOS that stays
    clean (so the ablations run its batch from block 15 instead of reading the template)."""
    lm = load_model()
    texts = [SPACE[0], ". and of the moon", "Hi", FAITH[3] + " " + SPACE[2], SPACE[4], "Yes"]
    pca = PCA(n_components=16, random_state=0).fit(extract_activations(SPACE + FAITH).X)
    plain = _plain_ce(lm, pca, texts, layer=15)
    one = ce_loss_recovered(pca, texts, layer=15, batch_size=1)
    padded = ce_loss_recovered(pca, texts, layer=15, batch_size=4)
    assert one["n_kept_clean"] == padded["n_kept_clean"] == 1
    for key, value in plain.items():  # measured: 1.4e-5 from plain, 2e-6 between batchings
        assert one[key] == pytest.approx(value, abs=1e-4), key
        assert padded[key] == pytest.approx(one[key], abs=1e-4), key
    # Four distinct conditions (measured 5.64, 5.55, 7.10, 14.31): the check is not vacuous.
    assert plain["ce_clean"] + 1 < plain["ce_mean_ablation"] < plain["ce_zero_ablation"] - 5
    assert abs(plain["ce_spliced"] - plain["ce_clean"]) > 0.05
