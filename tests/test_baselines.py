"""Flat baselines: TopK, BatchTopK, Matryoshka against direct computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.estimator_checks import check_estimator

from sklearn_hsae import SparseAutoencoder
from sklearn_hsae._config import FlatConfig
from sklearn_hsae._models import FlatSAE
from sklearn_hsae.datasets import make_hierarchical_activations


def make_model(seed=0, **overrides):
    cfg = dict(n_features=10, n_latents=16, k=3, aux_k=4, aux_coef=0.0)
    cfg.update(overrides)
    model = FlatSAE(FlatConfig(**cfg), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    model.reset_parameters(gen)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    model.init_from_data(x)
    return model, x


def dense_codes(model, x, keep):
    pre = (x - model.b_dec) @ model.W_enc.T + model.b_enc
    return F.relu(pre) * keep(F.relu(pre))


def test_topk_matches_dense_computation():
    model, x = make_model()
    z = dense_codes(model, x, lambda a: a >= torch.topk(a, 3, dim=1).values[:, -1:])
    codes = model(x)
    dense = torch.zeros_like(z).scatter(1, codes.indices[0], codes.values[0])
    torch.testing.assert_close(dense, z)
    torch.testing.assert_close(codes.x_hat, z @ model.W_dec + model.b_dec)
    model.loss(x).loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ((x - z @ model.W_dec - model.b_dec).pow(2).sum() / (12 * model.loss_scale)).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, msg=n)


def test_batchtopk_keeps_batch_k_in_training_and_a_threshold_at_inference():
    model, x = make_model(activation="batchtopk", k=2)
    act = F.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc)
    cut = torch.topk(act.reshape(-1), 2 * 12).values[-1]
    codes = model.train()(x)
    assert int((codes.values[0] > 0).sum()) == 24
    per_row = (codes.values[0] > 0).sum(dim=1)
    assert per_row.min() != per_row.max()  # rows share the budget unevenly
    torch.testing.assert_close(model.threshold, cut)  # first batch sets it
    model.train()(2 * x)  # EMA with momentum 0.99 afterwards
    cut2 = torch.topk(F.relu((2 * x - model.b_dec) @ model.W_enc.T + model.b_enc).reshape(-1), 24).values[-1]
    torch.testing.assert_close(model.threshold, 0.99 * cut + 0.01 * cut2)
    model.eval()
    z = dense_codes(model, x, lambda a: a > model.threshold)
    codes = model(x)
    dense = torch.zeros_like(z).scatter(1, codes.indices[0], codes.values[0])
    torch.testing.assert_close(dense, z)
    one_row = model(x[3:4])  # inference is row-independent
    torch.testing.assert_close(torch.zeros(1, 16, dtype=z.dtype).scatter(1, one_row.indices[0], one_row.values[0]), z[3:4])


def test_matryoshka_sums_every_prefix_loss():
    model, x = make_model(prefixes=(4, 9, 16), k=5)
    out = model.loss(x)
    z = dense_codes(model, x, lambda a: a >= torch.topk(a, 5, dim=1).values[:, -1:])
    expected = 0.0
    for width in (4, 9, 16):
        part = z[:, :width] @ model.W_dec[:width] + model.b_dec
        expected = expected + (x - part).pow(2).sum() / (12 * model.loss_scale)
    torch.testing.assert_close(out.loss, expected)
    assert set(out.terms) == {"recon", "prefix4", "prefix9"}


@pytest.mark.parametrize(
    "params",
    [dict(), dict(activation="batchtopk"), dict(matryoshka_prefixes=[0.25, 0.5]),
     dict(activation="batchtopk", matryoshka_prefixes=[0.3])],
    ids=["topk", "batchtopk", "matryoshka", "batchtopk-matryoshka"],
)
def test_check_estimator_passes_every_check(params):
    # sklearn's checks set n_components=1, so k=1 keeps every configuration valid.
    est = SparseAutoencoder(n_components=12, k=1, max_iter=3, batch_size=16, **params)
    results = check_estimator(est, on_fail=None)
    assert [(r["check_name"], r["exception"]) for r in results if r["status"] != "passed"] == []


@pytest.mark.parametrize(
    "prefixes, expected",
    [(None, ()), ([8, 32], (8, 32, 64)), ([0.25, 0.5], (16, 32, 64)), ([0.001, 0.5], (1, 32, 64)),
     ([8, 32, 64], (8, 32, 64))],  # SAELens writes the full width last
)
def test_matryoshka_prefixes(prefixes, expected):
    assert SparseAutoencoder(n_components=64, matryoshka_prefixes=prefixes)._prefixes() == expected


@pytest.mark.parametrize(
    "prefixes, match",
    [([8, 8], "increase strictly"), ([8, 65], "increase strictly"), ([64, 8], "increase strictly"), ([0.5, 1.5], r"lie in \(0, 1\)"),
     ([[1, 2]], "1-d list"), ([], "non-empty")],
)
def test_bad_matryoshka_prefixes(prefixes, match):
    X = np.random.RandomState(0).rand(20, 4)
    with pytest.raises(ValueError, match=match):
        SparseAutoencoder(n_components=64, k=2, matryoshka_prefixes=prefixes).fit(X)


def test_k_larger_than_the_dictionary_is_refused():
    with pytest.raises(ValueError, match="k=9 cannot exceed n_components=8"):
        SparseAutoencoder(n_components=8, k=9).fit(np.ones((4, 3)))


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_fits_and_reconstructs(activation):
    X, *_ = make_hierarchical_activations(n_samples=2000, random_state=0)
    sae = SparseAutoencoder(n_components=64, k=6, activation=activation, max_iter=30,
                            batch_size=256, random_state=0).fit(X)
    Z = sae.transform(X)
    assert Z.shape == (2000, 64)
    l0 = Z.getnnz(axis=1).mean()
    assert (l0 == 6) if activation == "topk" else (3 <= l0 <= 12)
    assert sae.score(X) > 0.6  # measured 0.68 (topk), 0.67 (batchtopk)
    assert (sae.threshold_ > 0) == (activation == "batchtopk")
    np.testing.assert_allclose(sae.inverse_transform(Z), Z @ sae.components_ + sae.intercept_)
    assert sae.get_feature_names_out()[5] == "sparseautoencoder5"
