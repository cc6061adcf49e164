"""sparse_ops: the sparse encoder / decoder gradients, torch and C kernels, against dense
autograd of the same math."""

import numpy as np
import pytest
import torch

from sklearn_hsae._models import native
from sklearn_hsae._models.sparse_ops import latent_route, select_linear, sparse_decode

cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


def _problem(B, m, d, j, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=gen, dtype=dtype)
    W = torch.randn(m, d, generator=gen, dtype=dtype)
    b = torch.randn(m, generator=gen, dtype=dtype)
    W_dec = torch.randn(m, d, generator=gen, dtype=dtype)
    pre = (x @ W.T + b).detach()
    # Rows pick j latents each; latent 0 is picked by every row, the last by none.
    idx = torch.topk(pre[:, 1:-1], j - 1, dim=1).indices + 1
    idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), idx], dim=1)
    target = torch.randn(B, d, generator=gen, dtype=dtype)
    return x, W, b, W_dec, pre, idx, target


def _grads(x, W, b, W_dec, pre, idx, target, use_native):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, W, b, W_dec)]
    x, W, b, W_dec = leaves
    values = torch.relu(select_linear(x, W, b, idx, pre, use_native))
    out = sparse_decode(values, idx, W_dec, use_native)
    loss = (out - target).pow(2).sum() + values.pow(3).sum()
    return [out.detach(), *torch.autograd.grad(loss, leaves)]


def _dense_grads(x, W, b, W_dec, pre, idx, target):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, W, b, W_dec)]
    x, W, b, W_dec = leaves
    values = torch.relu((x @ W.T + b).gather(1, idx))
    z = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype).scatter_add(1, idx, values)
    out = z @ W_dec
    loss = (out - target).pow(2).sum() + values.pow(3).sum()
    return [out.detach(), *torch.autograd.grad(loss, leaves)]


@cc
@pytest.mark.parametrize("B, m, d, j", [(30, 11, 7, 4), (64, 50, 12, 1), (5, 300, 33, 6)])
def test_native_and_torch_kernels_match_dense_autograd(B, m, d, j):
    problem = _problem(B, m, d, j, torch.float64)
    dense = _dense_grads(*problem)
    for use_native in (False, True):
        for name, ours, ref in zip(["out", "x", "W", "b", "W_dec"], _grads(*problem, use_native), dense):
            torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10,
                                       msg=f"{name} (native={use_native})")


@cc
def test_native_float32_close_to_torch():
    problem = _problem(200, 64, 40, 8, torch.float32)
    for name, a, b in zip(["out", "x", "W", "b", "W_dec"], _grads(*problem, True), _grads(*problem, False)):
        # float32 sums in another order: equal to a few ulps of the largest entry.
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()), msg=name)


@cc
def test_native_gradients_do_not_depend_on_the_thread_count():
    # 512 * 16 slots * 300 features: large enough to be split over the threads.
    problem = _problem(512, 200, 300, 16, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(*problem, True)
        torch.set_num_threads(3)
        three = _grads(*problem, True)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, three):
        assert torch.equal(a, b)


@cc
def test_latent_route_sorts_stably_and_refuses_bad_ids():
    idx = torch.tensor([[2, 0], [0, 2], [1, 0]])
    route = latent_route(idx, 4)
    assert route.start.tolist() == [0, 3, 4, 6, 6]
    assert route.rows.view(-1).tolist() == [0, 1, 2, 2, 0, 1]  # rows rise within a latent
    assert route.latent.tolist() == [0, 0, 0, 1, 2, 2]
    values = torch.arange(6.0).view(3, 2)
    assert route.sort(values).view(-1).tolist() == [1.0, 2.0, 5.0, 4.0, 0.0, 3.0]
    assert torch.equal(route.unsort(route.sort(values), values.shape), values)
    with pytest.raises(IndexError, match="out of range"):
        latent_route(torch.tensor([[0, 4]]), 4)
    with pytest.raises(IndexError, match="out of range"):
        latent_route(torch.tensor([[-1, 0]]), 4)


@cc
@pytest.mark.parametrize("params", [dict(activation="topk"), dict(activation="batchtopk"),
                                    dict(matryoshka_prefixes=[8, 16])])
def test_flat_fits_with_native_kernels_agree_with_torch(params, monkeypatch):
    from sklearn_hsae import SparseAutoencoder
    from sklearn_hsae.datasets import make_hierarchical_activations

    calls = []
    outer = native.expert_outer
    monkeypatch.setattr(native, "expert_outer", lambda *a: calls.append(1) or outer(*a))
    X = make_hierarchical_activations(n_samples=1500, random_state=0)[0].astype(np.float32)
    common = dict(n_components=32, k=4, max_iter=2, batch_size=256, random_state=0, **params)
    torch_kernels = SparseAutoencoder(compile=False, **common).fit(X)
    assert not calls
    a = SparseAutoencoder(compile="auto", **common).fit(X)
    assert len(calls) >= 12  # 2 epochs x 6 batches, the encoder's gradient at least
    b = SparseAutoencoder(compile="auto", **common).fit(X)
    assert np.array_equal(a.components_, b.components_) and a.loss_curve_ == b.loss_curve_
    np.testing.assert_allclose(a.components_, torch_kernels.components_, atol=1e-4)
    assert abs(a.score(X) - torch_kernels.score(X)) < 1e-4


def test_flat_failed_build_warns_and_matches_torch(monkeypatch):
    from sklearn_hsae import SparseAutoencoder
    from sklearn_hsae._models import fused

    monkeypatch.setattr(native, "LIBRARY", native._Library())
    monkeypatch.setattr(native, "compiler", lambda: "/nonexistent/cc")
    monkeypatch.setattr(fused._NativeWarning, "warned", False)
    X = np.random.RandomState(0).randn(600, 16).astype(np.float32)
    common = dict(n_components=24, k=3, max_iter=2, batch_size=100, random_state=0)
    with pytest.warns(RuntimeWarning, match="building sklearn_hsae's C kernels"):
        tried = SparseAutoencoder(compile=True, **common).fit(X)
    plain = SparseAutoencoder(compile=False, **common).fit(X)
    assert np.array_equal(tried.components_, plain.components_)


@pytest.mark.parametrize("use_native", [False, pytest.param(True, marks=cc)])
def test_centre_gives_the_decoder_bias_its_gradient_per_latent(use_native):
    """Centring without a graph (``centre``) and passing the bias as ``center``: every
    gradient equals dense autograd through ``x - b_dec``, and an input that wants its
    gradient keeps the graph (no center) and gets it."""
    from sklearn_hsae._models.common import centre, pre_activations, topk_select

    gen = torch.Generator().manual_seed(5)
    B, m, d, k = 40, 30, 9, 4
    x = torch.randn(B, d, generator=gen, dtype=torch.float64)
    W = torch.randn(m, d, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, generator=gen, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(d, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(B, k, generator=gen, dtype=torch.float64)

    def loss(x, shortcut):
        xc, center = centre(x, b_dec, shortcut=shortcut)
        assert (center is b_dec) == (shortcut and not x.requires_grad)
        assert xc.requires_grad == (center is None)
        values, _ = topk_select(pre_activations(xc, W, b, use_native=use_native, center=center), k)
        return (values * weights).pow(2).sum()

    leaves = (W, b, b_dec)
    ours = torch.autograd.grad(loss(x, True), leaves)
    dense = torch.autograd.grad(loss(x, False), leaves)
    for name, a, r in zip(("W", "b", "b_dec"), ours, dense):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12, msg=name)
    assert ours[2].abs().sum() > 0
    xg = x.clone().requires_grad_(True)  # attribution: the input's gradient too
    grad_x, grad_b_dec = torch.autograd.grad(loss(xg, True), (xg, b_dec))
    torch.testing.assert_close(grad_b_dec, dense[2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_b_dec, -grad_x.sum(0), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sparse encoder"):
        pre_activations(x - b_dec.detach(), W, b, dense=True, center=b_dec)


@pytest.mark.parametrize("workspace", [False, True])
def test_squared_errors_match_mse_loss_and_its_gradients(workspace):
    """The fused terms equal ``mse_loss(reduction="sum")`` of each reconstruction, in
    value and in the gradients of every reconstruction and of x; the residuals it
    turns into gradients in place refuse a second backward."""
    import torch.nn.functional as F

    from sklearn_hsae._models.common import squared_errors
    from sklearn_hsae._models.workspace import Workspace

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(17, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    hats = [torch.randn(17, 6, generator=gen, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]
    coefs = (1.0, 0.3, 2.5)
    ws = Workspace() if workspace else None
    for _ in range(2):  # a second call reuses the workspace's buffers
        sums = squared_errors(x, *hats, workspace=ws)
        refs = [F.mse_loss(h, x, reduction="sum") for h in hats]
        for s, r in zip(sums, refs):
            torch.testing.assert_close(s, r, rtol=1e-14, atol=0)
        ours = torch.autograd.grad(sum(c * s for c, s in zip(coefs, sums)), [x, *hats])
        dense = torch.autograd.grad(sum(c * r for c, r in zip(coefs, refs)), [x, *hats])
        for a, r in zip(ours, dense):
            torch.testing.assert_close(a, r, rtol=1e-14, atol=1e-14)
    sums = squared_errors(x, hats[0], workspace=ws)
    sums[0].backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        sums[0].backward()
