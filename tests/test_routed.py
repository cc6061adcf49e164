"""The routed H-SAE core against a plain dense implementation of the same math."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sklearn_hsae._config import RoutedConfig
from sklearn_hsae._models import RoutedSAE
from sklearn_hsae._models.grouped import make_tiling, tile_size_for


def make_model(seed=0, dtype=torch.float64, **overrides):
    cfg = dict(n_features=12, n_parents=7, n_children=5, subspace_dim=3, k=3, aux_k=4)
    cfg.update(overrides)
    config = RoutedConfig(**cfg)
    model = RoutedSAE(config, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    model.reset_parameters(gen)
    with torch.no_grad():  # move every parameter off its tied init, biases included
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    x = torch.randn(9, config.n_features, generator=gen, dtype=dtype)
    model.init_from_data(x)
    return model, x


def dense_reference(model, x):
    """Every parent's children computed densely, then masked by the parent TopK."""
    cfg = model.config
    xc = x - model.b_dec
    pre = xc @ model.W_enc.T + model.b_enc  # (B, m)
    vals, idx = torch.topk(pre, cfg.k, dim=1)
    vals = F.relu(vals)
    z = torch.zeros_like(pre).scatter(1, idx, vals)  # (B, m) dense parent code
    x_par = z @ model.W_dec + model.b_dec
    u = torch.einsum("psd,bd->bps", model.W_down, xc)  # (B, m, s)
    child_pre = torch.einsum("pcs,bps->bpc", model.E_child, u)  # (B, m, C)
    act, arg = F.relu(child_pre).max(dim=2)  # (B, m)
    act = act * (z > 0)
    atom = model.D_child[torch.arange(cfg.n_parents), arg]  # (B, m, s)
    out = torch.einsum("bp,bps,psd->bd", act, atom, model.W_up)
    x_hat = x_par + out
    child_pre_active = child_pre * (z > 0)[..., None]
    return z, act, arg, x_par, x_hat, pre, child_pre_active


def dense_loss(model, x):
    cfg = model.config
    z, act, arg, x_par, x_hat, pre, child_pre_active = dense_reference(model, x)
    B = x.shape[0]
    recon = (x - x_hat).pow(2).sum() / (B * model.loss_scale)
    parents_only = (x - x_par).pow(2).sum() / (B * model.loss_scale)
    total = recon + cfg.beta * parents_only
    l1 = (F.relu(pre).sum() + F.relu(child_pre_active).sum()) / (B * model.loss_scale.sqrt())
    total = total + cfg.l1_coef * l1
    e = F.normalize(model.W_enc, dim=1) @ F.normalize(model.W_dec, dim=1).T
    off = e - torch.diag(torch.diag(e))
    m = cfg.n_parents
    total = total + cfg.ortho_coef * off.norm() / (m * m - m)
    return total


def test_forward_matches_dense_reference():
    model, x = make_model()
    codes = model._forward(x).codes
    z, act, arg, x_par, x_hat, *_ = dense_reference(model, x)
    torch.testing.assert_close(codes.x_hat, x_hat)
    torch.testing.assert_close(codes.x_hat_parents, x_par)
    B, k = codes.parent_values.shape
    dense_parent = torch.zeros_like(z).scatter(1, codes.parent_indices, codes.parent_values)
    torch.testing.assert_close(dense_parent, z)
    for b in range(B):
        for j in range(k):
            p = int(codes.parent_indices[b, j])
            if codes.parent_values[b, j] > 0:
                assert int(codes.child_indices[b, j]) == p * 5 + int(arg[b, p])
                torch.testing.assert_close(codes.child_values[b, j], act[b, p])
            else:
                assert codes.child_values[b, j] == 0


@pytest.mark.parametrize("compile_mode", [False, "auto"])  # eager; native where built
def test_loss_counts_the_active_children_of_the_codes(compile_mode):
    """The loss reads its child L0 off the tile slots, skipping the (B, k) child codes:
    the same count as the codes give, with inactive parent slots in the batch."""
    from sklearn_hsae._models.common import level_l0

    model, x = make_model(n_parents=6, k=4)
    model.compile_mode = compile_mode
    x = torch.cat([x] * 5)
    with torch.no_grad():  # an active parent none of whose children fires
        model.E_child[int(model._forward(x).codes.parent_indices[0, 0])] = 0
    codes = model._forward(x).codes
    assert (codes.parent_values == 0).any() and (codes.child_values[codes.parent_values > 0] == 0).any()
    expected = level_l0([codes.parent_values, codes.child_values])
    assert model._forward(x, slots=False).codes.child_values is None
    torch.testing.assert_close(model.loss(x).l0, expected, rtol=0, atol=0)


def test_encoding_without_autograd_walks_tiles_in_chunks(monkeypatch):
    """The no-grad path gathers a few tiles at a time and must give the same codes."""
    from sklearn_hsae._models import grouped

    model, x = make_model(n_parents=6, k=4)
    x = torch.cat([x] * 20)  # 180 rows: several tiles per expert
    with_graph = model._forward(x).codes
    monkeypatch.setattr(grouped, "_INFERENCE_SLOTS", 8)  # many chunks, a ragged last one
    with torch.no_grad():
        chunked = model._forward(x).codes
    _, _, _, x_par, x_hat, *_ = dense_reference(model, x)
    torch.testing.assert_close(chunked.x_hat, x_hat)
    for name in chunked._fields:
        assert torch.equal(getattr(chunked, name), getattr(with_graph, name)), name


@pytest.mark.parametrize("l1_coef, ortho_coef", [(0.0, 0.0), (0.01, 0.5)])
def test_gradients_match_dense_reference(l1_coef, ortho_coef):
    model, x = make_model(l1_coef=l1_coef, ortho_coef=ortho_coef, aux_coef=0.0, beta=0.3)
    model.loss(x).loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    dense_loss(model, x).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, msg=f"gradient of {name}")
        assert p.grad.abs().sum() > 0, name


def test_gradients_match_finite_differences():
    model, x = make_model(aux_coef=0.0)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def loss_of(flat):
        chunks = torch.split(flat, [int(np.prod(s)) for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return torch.func.functional_call(model, params, (x,), strict=False).x_hat.pow(2).sum()

    # The loss as the training loop sees it, through a functional call.
    def full_loss(flat):
        chunks = torch.split(flat, [int(np.prod(s)) for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        with torch.nn.utils.stateless._reparametrize_module(model, params):
            return model.loss(x).loss

    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    for fn in (loss_of, full_loss):
        point = flat.clone().requires_grad_(True)
        fn(point).backward()
        analytic = point.grad
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):  # directional derivatives along random directions
            v = torch.randn(flat.shape, generator=gen, dtype=flat.dtype)
            eps = 1e-6
            with torch.no_grad():
                numeric = (fn(flat + eps * v) - fn(flat - eps * v)) / (2 * eps)
            assert float(numeric) == pytest.approx(float(analytic @ v), rel=1e-5, abs=1e-8)


def test_auxk_revives_dead_parents_only():
    model, x = make_model(aux_coef=1.0, dead_tokens=0, n_parents=20, k=1)
    with torch.no_grad():
        model.tokens_since_fired.fill_(100)
    codes = model._forward(x).codes
    fired = torch.unique(codes.parent_indices[codes.parent_values > 0])
    dead = torch.ones(20, dtype=torch.bool)
    dead[fired] = False
    assert 0 < dead.sum() < 20
    out = model.loss(x)
    assert out.terms["auxk"] > 0
    counter = model.tokens_since_fired
    assert torch.all(counter[fired] == 0)
    assert torch.all(counter[dead] == 100 + x.shape[0])
    # Dead parents' encoder rows learn only through AuxK.
    out.loss.backward()
    assert model.W_enc.grad[dead].abs().sum() > 0
    without, _ = make_model(aux_coef=0.0, dead_tokens=0, n_parents=20, k=1)
    without.loss(x).loss.backward()
    assert without.W_enc.grad[dead].abs().sum() == 0


def test_decoder_constraints():
    model, x = make_model()
    model.loss(x).loss.backward()
    model.before_optimizer_step()
    for w in (model.W_dec, model.D_child):
        radial = (w.grad * w).sum(-1) / w.norm(dim=-1)
        torch.testing.assert_close(radial, torch.zeros_like(radial))
    with torch.no_grad():
        model.W_dec.mul_(3.0)
        model.D_child.mul_(0.5)
    model.after_optimizer_step()
    for w in (model.W_dec, model.D_child):
        torch.testing.assert_close(w.norm(dim=-1), torch.ones(w.shape[:-1], dtype=w.dtype))


def test_child_directions_and_norms_agree():
    model, _ = make_model()
    directions, norms = model.child_directions()
    torch.testing.assert_close(model.child_norms(), norms)
    torch.testing.assert_close(directions.norm(dim=1), torch.ones_like(norms))
    p, c = 4, 2
    vector = model.D_child[p, c] @ model.W_up[p]
    torch.testing.assert_close(directions[p * 5 + c] * norms[p * 5 + c], vector.detach())


@pytest.mark.parametrize("n_pairs, n_experts, tile", [(0, 4, 1), (1, 3, 1), (50, 7, 4), (97, 5, 16)])
def test_tiling_covers_every_pair_once(n_pairs, n_experts, tile):
    gen = torch.Generator().manual_seed(n_pairs)
    expert = torch.randint(n_experts, (n_pairs,), generator=gen)
    t = make_tiling(expert, n_experts, tile)
    slots = t.pair[t.valid]
    assert sorted(slots.tolist()) == list(range(n_pairs))
    assert torch.all(t.expert[t.tile_of_pair] == expert)
    assert torch.all(t.pair[t.tile_of_pair, t.slot_of_pair] == torch.arange(n_pairs))
    counts = torch.bincount(expert, minlength=n_experts)
    assert t.pair.shape[0] == max(1, int(((counts + tile - 1) // tile).sum()))


def test_rows_with_no_active_parent():
    model, x = make_model()
    with torch.no_grad():
        model.b_enc.fill_(-1e6)  # nothing survives the ReLU
    out = model.loss(x)
    out.loss.backward()
    codes = model._forward(x).codes
    assert torch.all(codes.parent_values == 0) and torch.all(codes.child_values == 0)
    torch.testing.assert_close(codes.x_hat, model.b_dec.expand_as(x))


def test_tile_size_is_a_small_power_of_two():
    assert tile_size_for(0, 10) == 1
    assert tile_size_for(64 * 32, 64) == 32
    assert tile_size_for(64 * 40, 64) == 32
    assert tile_size_for(10**7, 10) == 64


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch op produces."""

    def __init__(self):
        super().__init__()
        self.largest = (0, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() > self.largest[0]:
                self.largest = (t.numel(), (str(func), tuple(t.shape)))
        return out


def test_children_are_computed_only_for_active_parents():
    # Wide model: a dense child computation would need B * m * s = 2.1M or
    # B * m * C = 8.4M entries; parameters hold at most m * C * s = 1M.
    B, d, m, C, s, k = 64, 16, 4096, 32, 8, 4
    config = RoutedConfig(n_features=d, n_parents=m, n_children=C, subspace_dim=s, k=k, aux_k=8)
    model = RoutedSAE(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(B, d)
    model.init_from_data(x)
    with _LargestTensor() as probe:
        out = model.loss(x)
        out.loss.backward()
    largest, where = probe.largest
    assert largest <= m * C * s, where  # parameter-sized at most
    assert largest < B * m * s


# ----------------------------------------------------------- compiled child path
# The CPU kernels of native.py (kernels.c, built once per machine with the C compiler)
# and inductor's (fused.py, for CUDA; tested here on its C++ backend).
cc = pytest.mark.skipif(
    __import__("sklearn_hsae._models.native", fromlist=["x"]).compiler() is None,
    reason="no C compiler on this machine")


def _routing(B=40, m=6, k=3, seed=3, dtype=torch.float64):
    from sklearn_hsae._models.grouped import make_route
    from sklearn_hsae._models.workspace import Workspace

    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(B, k, generator=gen, dtype=dtype) - 0.2  # some slots inactive
    indices = torch.stack([torch.randperm(m, generator=gen)[:k] for _ in range(B)])
    return make_route(values, indices, m, Workspace()), gen


@cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("s", [1, 3, 4, 6])
@pytest.mark.parametrize("d", [13, 150])  # 150: every vector block and tail of the loops
def test_native_kernels_match_einsum(dtype, s, d, monkeypatch):
    from sklearn_hsae._models import native

    B, m = 40, 6
    route, gen = _routing(B, m)
    rows, expert = route.rows.view(route.tiling.pair.shape), route.tiling.expert
    assert (rows == B).any()  # padding slots, which must read as zeros
    x = torch.randn(B, d, generator=gen, dtype=dtype)
    padded = torch.cat([x, x.new_zeros(1, d)])
    W = torch.randn(m, s, d, generator=gen, dtype=dtype)
    g = torch.randn(*rows.shape, s, generator=gen, dtype=dtype)
    dot = torch.einsum("tsd,tid->tis", W[expert], padded[rows])  # (n_tiles, T, s)
    outer = torch.zeros(m, s, d, dtype=dtype).index_add_(0, expert, torch.einsum("tis,tid->tsd", g, padded[rows]))
    v = torch.randn(*rows.shape, s, generator=gen, dtype=dtype)  # padding slots too: ignored
    per_pair = torch.einsum("tis,tsd->tid", v, W[expert]).reshape(-1, d)
    row_sum = torch.zeros(B + 1, d, dtype=dtype).index_add_(0, rows.reshape(-1), per_pair)[:B]
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    got = {"dot": native.pair_dot(x, W, rows, expert),
           "outer": native.expert_outer(g, x, rows, route.tiling.start),
           "fused": native.dot_outer(g, x, W, rows, route.tiling.start),
           "row_sum": native.pair_sum(v, W, rows, route.tiling.start, B)}
    torch.testing.assert_close(got["dot"], dot, **tol)
    torch.testing.assert_close(got["outer"], outer, **tol)
    torch.testing.assert_close(got["fused"][0], dot, **tol)
    torch.testing.assert_close(got["fused"][1], outer, **tol)
    torch.testing.assert_close(got["row_sum"], row_sum, **tol)
    base = torch.randn(B, d, generator=gen, dtype=dtype)  # x_hat = x_par + children, in one pass
    torch.testing.assert_close(native.pair_sum(v, W, rows, route.tiling.start, B, base=base),
                               base + row_sum, **tol)
    with pytest.raises(ValueError, match=r"base must have shape \(40, %d\)" % d):
        native.pair_sum(v, W, rows, route.tiling.start, B, base=base[1:])
    # Work split over threads: every element is summed by one range in a fixed order, so
    # one thread and many give the same bits, on OpenMP's threads and on the pool.
    monkeypatch.setattr(native, "_MIN_SPLIT", 1)
    previous = torch.get_num_threads()
    for openmp in {native.LIBRARY.openmp, False}:
        monkeypatch.setattr(native.LIBRARY, "openmp", openmp)
        try:
            torch.set_num_threads(3)
            split = {"dot": native.pair_dot(x, W, rows, expert),
                     "outer": native.expert_outer(g, x, rows, route.tiling.start),
                     "row_sum": native.pair_sum(v, W, rows, route.tiling.start, B)}
        finally:
            torch.set_num_threads(previous)
        for name, value in split.items():
            assert torch.equal(value, got[name]), (name, openmp)


@cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C, s", [(3, 2), (8, 4), (20, 1), (16, 5)])  # C: under, at, over a vector
def test_native_child_selection_is_a_first_largest_scan(dtype, C, s):
    """child_forward's vector kernel gives each slot the child a sequential scan picks:
    the first largest relu(E[p, c] . u), act 0 and child 0 when none is positive, zeros
    on padding; v = act * D[p, child]."""
    from sklearn_hsae._models import native

    B, m = 40, 6
    route, gen = _routing(B, m)
    rows, expert = route.rows.view(route.tiling.pair.shape), route.tiling.expert
    u = torch.randn(*rows.shape, s, generator=gen, dtype=dtype)
    E = torch.randn(m, C, s, generator=gen, dtype=dtype)
    E[:, 0] *= 10
    E[:, C - 1] = E[:, 0]  # children 0 and C - 1 tie wherever 0 wins: the first must win
    D = torch.randn(m, C, s, generator=gen, dtype=dtype)
    t, i = (rows != B).nonzero()[1].tolist()
    u[t, i] = E[expert[t], 0]  # a slot child 0 (and so C - 1) wins
    u[0, 0] = -u[0, 0].abs()
    E[expert[0]] = E[expert[0]].abs()  # slot (0, 0): every pre-activation negative
    v, act, arg = native.child_forward(u, E, D, rows, expert, B)
    # (n_tiles, T, C), elementwise in j order: tied children get bitwise-equal sums
    pre = sum(E[expert][:, None, :, j] * u[:, :, None, j] for j in range(s))
    want_act, want_arg = torch.zeros_like(act), torch.zeros_like(arg)
    for t, i in np.ndindex(*rows.shape):  # the scan the kernel stands for
        if rows[t, i] == B:
            continue
        for c in range(C):
            if pre[t, i, c] > want_act[t, i]:
                want_act[t, i], want_arg[t, i] = pre[t, i, c], c
    assert rows[0, 0] != B and int(act[0, 0]) == 0 and int(arg[0, 0]) == 0
    assert (arg == C - 1).sum() == 0 and ((want_arg == 0) & (want_act > 0)).any()
    assert torch.equal(arg, want_arg)
    torch.testing.assert_close(act, want_act, rtol=1e-6, atol=1e-6)
    want_v = want_act[..., None] * D[expert[:, None], want_arg]
    torch.testing.assert_close(v, want_v, rtol=1e-6, atol=1e-6)
    assert torch.equal(v[rows == B], torch.zeros_like(v[rows == B]))



@cc
@pytest.mark.parametrize("B, m, k, cutoff", [(40, 6, 3, 0.2), (300, 16, 4, 0.5), (5, 4, 2, 2.0)])
def test_native_route_is_the_torch_route(B, m, k, cutoff):
    """The counting sort of kernels.c lays the pairs out exactly as make_tiling's sorts,
    including a batch with no active slot at all (cutoff 2: every value negative)."""
    from sklearn_hsae._models.grouped import make_route
    from sklearn_hsae._models.workspace import Workspace

    gen = torch.Generator().manual_seed(B)
    values = torch.rand(B, k, generator=gen, dtype=torch.float64) - cutoff
    indices = torch.stack([torch.randperm(m, generator=gen)[:k] for _ in range(B)])
    ref = make_route(values, indices, m, Workspace())
    got = make_route(values, indices, m, Workspace(), kernels="native")
    assert got.kernels == "native"
    for name in ("rows", "slot_pos", "slot_active", "slot_expert"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    for name in ref.tiling._fields:
        assert torch.equal(getattr(got.tiling, name), getattr(ref.tiling, name)), name


@cc
def test_native_kernels_refuse_bad_indices_and_dtypes(monkeypatch):
    from sklearn_hsae._models import native

    route, gen = _routing()
    rows, expert = route.rows.view(route.tiling.pair.shape), route.tiling.expert
    x, W = torch.randn(40, 5, dtype=torch.float64), torch.randn(6, 3, 5, dtype=torch.float64)
    with pytest.raises(IndexError, match="out of range"):
        native.pair_dot(x, W, rows, expert.clone().fill_(6))
    bad_last = expert.clone()
    bad_last[-1] = 6  # only the last range meets it: its code must reach the caller
    monkeypatch.setattr(native, "_MIN_SPLIT", 1)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for openmp in {native.LIBRARY.openmp, False}:
            monkeypatch.setattr(native.LIBRARY, "openmp", openmp)
            with pytest.raises(IndexError, match="out of range"):
                native.pair_dot(x, W, rows, bad_last)
    finally:
        torch.set_num_threads(previous)
    monkeypatch.undo()
    bad_rows = rows.clone()
    bad_rows[0, 0] = 41  # one past the padding row
    with pytest.raises(IndexError, match="out of range"):
        native.expert_outer(torch.ones(*rows.shape, 3, dtype=torch.float64), x, bad_rows, route.tiling.start)
    with pytest.raises(IndexError, match="expert index is out of range"):
        native.route_counts(route.slot_active, route.slot_expert.clone().fill_(6), 6)
    with pytest.raises(TypeError, match="one dtype"):
        native.pair_dot(x.float(), W, rows, expert)
    with pytest.raises(TypeError, match="float32 or float64"):
        native.pair_sum(torch.ones(*rows.shape, 3, dtype=torch.float16), W.half(), rows,
                        route.tiling.start, 40)


@cc
def test_native_kernels_run_in_a_forked_child():
    """Threads do not survive fork; a child process must get fresh ones (OpenMP's team,
    or the pool without OpenMP) instead of waiting forever on the parent's dead workers."""
    import multiprocessing

    from sklearn_hsae._models import native

    route, gen = _routing(200, 6)
    rows, expert = route.rows.view(route.tiling.pair.shape), route.tiling.expert
    x, W = torch.randn(200, 64, dtype=torch.float64), torch.randn(6, 4, 64, dtype=torch.float64)
    expected = native.pair_dot(x, W, rows, expert)
    previous = native._MIN_SPLIT
    native._MIN_SPLIT = 1  # split even this small call over the pool
    try:
        native.pair_dot(x, W, rows, expert)  # the parent's threads now exist
        assert native.LIBRARY.openmp or native.LIBRARY.pool is not None or torch.get_num_threads() == 1
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(native.pair_dot, (x, W, rows, expert)).get(timeout=60)
    finally:
        native._MIN_SPLIT = previous
    assert torch.equal(got, expected)


@cc
def test_native_build_is_cached_per_source(tmp_path, monkeypatch):
    from sklearn_hsae._models import native

    monkeypatch.setenv("SKLEARN_HSAE_CACHE", str(tmp_path))
    first = native._build(native.compiler())
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native._build(native.compiler()) == first  # a second process reuses it
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left


compiled = pytest.mark.skipif(
    not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
    reason="no C++ compiler for inductor on this machine")


@compiled
def test_compiled_kernels_match_eager_and_dense():
    from sklearn_hsae._models import fused

    B, d, m, s = 40, 12, 6, 3
    route, gen = _routing(B, m)
    x = torch.randn(B + 1, d, generator=gen, dtype=torch.float64)
    x[B] = 0  # the padding row
    W = torch.randn(m, s, d, generator=gen, dtype=torch.float64)
    rows, expert = route.rows.view(route.tiling.pair.shape), route.tiling.expert
    dense = torch.einsum("tsd,tid->tis", W[expert], x[rows])
    got = fused.pair_dot(x, W, rows, expert)
    torch.testing.assert_close(got, dense)
    torch.testing.assert_close(got, fused.eager_pair_dot(x, W, rows, expert))
    g = torch.randn(*rows.shape, s, generator=gen, dtype=torch.float64)
    outer = fused.tile_outer(g, x, rows)
    torch.testing.assert_close(outer, torch.einsum("tis,tid->tsd", g, x[rows]))
    torch.testing.assert_close(outer, fused.eager_tile_outer(g, x[rows]))
    # Shapes are dynamic: another tile count runs the same compiled graph, no recompile.
    counters = torch._dynamo.utils.counters["stats"]
    before = counters["unique_graphs"]
    route2, _ = _routing(25, m, seed=4)
    rows2 = route2.rows.view(route2.tiling.pair.shape)
    assert rows2.shape != rows.shape
    torch.testing.assert_close(fused.pair_dot(x, W, rows2, route2.tiling.expert),
                               torch.einsum("tsd,tid->tis", W[route2.tiling.expert], x[rows2]))
    assert counters["unique_graphs"] == before


def _force_kernels(monkeypatch, kernels):
    """Route every step of RoutedSAE through ``kernels``, whatever the device."""
    from sklearn_hsae._models import routed

    monkeypatch.setattr(routed, "kernels_for", lambda *a: kernels)


@pytest.mark.parametrize("kernels", [pytest.param("native", marks=cc), pytest.param("inductor", marks=compiled)])
@pytest.mark.parametrize("l1_coef", [0.0, 0.01])
def test_fast_kernels_gradients_match_eager_and_dense(kernels, l1_coef, monkeypatch):
    model, x = make_model(l1_coef=l1_coef, aux_coef=0.0, beta=0.3)
    x = torch.cat([x] * 6)  # several tiles per expert
    grads = {}
    for mode in ("eager", kernels):
        _force_kernels(monkeypatch, mode)
        model.zero_grad()
        out = model.loss(x)
        out.loss.backward()
        grads[mode] = (out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    dense_loss(model, x).backward()
    torch.testing.assert_close(grads[kernels][0], grads["eager"][0])
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[kernels][1][name], grads["eager"][1][name], msg=f"gradient of {name}")
        torch.testing.assert_close(grads[kernels][1][name], p.grad, msg=f"dense gradient of {name}")
    with torch.no_grad():  # encoding without a graph takes the same kernels
        torch.testing.assert_close(model._forward(x).codes.x_hat, dense_reference(model, x)[4])
    # An input that needs its gradient (attribution) takes the per-row path instead of
    # the bias-only shortcut; both agree with dense autograd.
    xg = x.clone().requires_grad_(True)
    model.zero_grad()
    model.loss(xg).loss.backward()
    xd = x.clone().requires_grad_(True)
    dense_loss(model, xd).backward()
    torch.testing.assert_close(xg.grad, xd.grad)


@cc
def test_expert_weight_gradients_reuse_their_memory_and_still_accumulate(monkeypatch):
    """W_down's and W_up's gradients land in reused memory (no per-step allocation) that
    autograd adopts without a copy; a gradient already there is added to, not aliased."""
    model, x = make_model(aux_coef=0.0, beta=0.3)
    x = torch.cat([x] * 6)
    _force_kernels(monkeypatch, "native")
    names = ("W_down", "W_up")
    model.loss(x).loss.backward()
    first = {n: getattr(model, n).grad.clone() for n in names}
    memory = {n: getattr(model, n).grad.data_ptr() for n in names}
    model.zero_grad()
    other = x.flip(0) * 0.5 + 0.1
    model.loss(other).loss.backward()
    second = {n: getattr(model, n).grad.clone() for n in names}
    for n in names:
        assert getattr(model, n).grad.data_ptr() == memory[n], n
        assert not torch.allclose(second[n], first[n]), n
    model.loss(x).loss.backward()  # no zero_grad: accumulates onto the second batch's
    for n in names:
        torch.testing.assert_close(getattr(model, n).grad, second[n] + first[n], msg=n)
    model.zero_grad()
    _force_kernels(monkeypatch, "eager")  # the eager kernels allocate, with equal values
    model.loss(x).loss.backward()
    for n in names:
        torch.testing.assert_close(getattr(model, n).grad, first[n], msg=n)


@cc
def test_native_fits_are_deterministic_and_agree_with_eager():
    from sklearn_hsae import HierarchicalSparseAutoencoder
    from sklearn_hsae.datasets import make_hierarchical_activations

    X = make_hierarchical_activations(n_samples=1500, random_state=0)[0].astype(np.float32)
    params = dict(n_parents=24, n_children=4, k=3, max_iter=2, batch_size=256, random_state=0)
    a = HierarchicalSparseAutoencoder(compile=True, **params).fit(X)
    b = HierarchicalSparseAutoencoder(compile=True, **params).fit(X)
    eager = HierarchicalSparseAutoencoder(compile=False, **params).fit(X)
    assert np.array_equal(a.components_, b.components_)  # bitwise: resume stays exact
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_allclose(a.components_, eager.components_, atol=1e-4)
    assert abs(a.score(X) - eager.score(X)) < 1e-4


_SMALL = dict(n_parents=8, n_children=3, subspace_dim=2, k=2, max_iter=2, batch_size=100, random_state=0)


def test_failed_native_build_warns_once_and_runs_eagerly(monkeypatch):
    from sklearn_hsae import HierarchicalSparseAutoencoder
    from sklearn_hsae._models import fused, native

    monkeypatch.setattr(native, "LIBRARY", native._Library())
    monkeypatch.setattr(native, "compiler", lambda: "/nonexistent/cc")
    monkeypatch.setattr(fused._NativeWarning, "warned", False)
    X = np.random.RandomState(0).randn(600, 16).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="building sklearn_hsae's C kernels") as record:
        tried = HierarchicalSparseAutoencoder(compile=True, **_SMALL).fit(X)
        HierarchicalSparseAutoencoder(compile="auto", **_SMALL).fit(X)  # no second warning
    assert len([w for w in record if "C kernels" in str(w.message)]) == 1
    eager = HierarchicalSparseAutoencoder(compile=False, **_SMALL).fit(X)
    assert np.array_equal(tried.components_, eager.components_)


def test_failed_compilation_warns_once_and_runs_eagerly(monkeypatch):
    from sklearn_hsae import HierarchicalSparseAutoencoder
    from sklearn_hsae._models import fused

    def no_compiler(self):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(fused, "COMPILED", fused._Compiled())
    monkeypatch.setattr(fused._Compiled, "get", no_compiler)
    _force_kernels(monkeypatch, "inductor")
    X = np.random.RandomState(0).randn(600, 16).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="torch.compile of the routed child path failed.*No working C"
                      ) as record:
        tried = HierarchicalSparseAutoencoder(compile=True, **_SMALL).fit(X)
        HierarchicalSparseAutoencoder(compile=True, **_SMALL).fit(X)  # no second warning
    assert len([w for w in record if "torch.compile" in str(w.message)]) == 1
    _force_kernels(monkeypatch, "eager")
    # compile=True with the child path forced eager: the parents' sparse gradients take
    # the same (C on CPU) kernels as in the failed run.
    eager = HierarchicalSparseAutoencoder(compile=True, **_SMALL).fit(X)
    assert np.array_equal(tried.components_, eager.components_)


def test_kernel_choice(monkeypatch):
    from sklearn_hsae._models import fused, native

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fused.kernels_for(False, cpu, 1e12) == "eager"
    expected = "native" if native.compiler() is not None else "eager"
    assert fused.kernels_for("auto", cpu, 1.0) == expected  # cheap to build: every size
    # Without a compiler "auto" stays eager without a word (a warning would be an error here).
    monkeypatch.setattr(native, "compiler", lambda: None)
    assert fused.kernels_for("auto", cpu, 1e12) == "eager"
    # CUDA: inductor (Triton) only for steps large enough to repay compiling.
    monkeypatch.setattr(fused, "compiler_available", lambda device: True)
    assert fused.kernels_for("auto", cuda, fused._AUTO_MIN_PAIR_MACS / 2) == "eager"
    assert fused.kernels_for("auto", cuda, 6 * 4096 * 32 * 4 * 576) == "inductor"
    assert fused.kernels_for(True, cuda, 1.0) == "inductor"
    assert fused.kernels_for(True, torch.device("mps"), 1e12) == "eager"
def test_a_small_fit_never_imports_the_compiler():
    """compile="auto" leaves small fits eager: inductor and dynamo take seconds to import."""
    import os
    import subprocess
    import sys

    script = ("import sys, numpy as np\n"
              "from sklearn_hsae import HierarchicalSparseAutoencoder\n"
              "X = np.random.RandomState(0).randn(2000, 64).astype('float32')\n"
              "HierarchicalSparseAutoencoder(n_parents=24, n_children=4, k=3, max_iter=2, random_state=0).fit(X)"
              ".transform(X)\n"
              "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
