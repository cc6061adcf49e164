"""The Tree SAE (paper 3, ``architecture="nested"``) against direct dense computations,
and as an estimator on the generator's known tree."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae._config import NestedConfig, TrainConfig
from sklearn_hsae._models import NestedSAE
from sklearn_hsae._models.nested import greedy_quotas, move_dead_children
from sklearn_hsae._training import Trainer
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io import load, save
from sklearn_hsae.metrics import hierarchy_consistency, tree_recovery

B, D = 16, 10


def make_nested(widths=(4, 8), seed=0, parents=None, **overrides):
    cfg = dict(n_features=D, widths=widths, k=3, aux_k=(3,) * len(widths), aux_coef=0.0,
               dead_tokens=100, eligible_tokens=50, realloc_first=10**6, realloc_max=10**6,
               root_reset_step=10**6)
    cfg.update(overrides)
    model = NestedSAE(NestedConfig(**cfg), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    model.reset_parameters(gen)
    x = torch.randn(B, D, generator=gen, dtype=torch.float64)
    model.init_from_data(x)
    with torch.no_grad():  # encoders that differ from the decoders, non-zero biases
        for level in model.levels:
            level.W_enc.add_(0.3 * torch.randn(level.W_enc.shape, generator=gen, dtype=x.dtype))
            level.b_enc.copy_(0.1 * torch.randn(level.b_enc.shape, generator=gen, dtype=x.dtype))
        if parents is not None:
            for level, index in zip(model.levels[1:], parents):
                level.parent_index.copy_(torch.tensor(index))
    return model, x


def dense_codes(model, x):
    """Every level's (B, w) codes and (B, w) "parent fired" masks, with full matrices,
    a loop over features for the parent links and argsort for the top-k."""
    k, xc = model.config.k, x - model.b_dec
    codes, masks, active = [], [], None
    for level in model.levels:
        pre = xc @ level.W_enc.T + level.b_enc  # (B, w)
        allowed = torch.ones_like(pre, dtype=torch.bool)
        for c, p in enumerate(level.parent_index.tolist()):
            if active is not None and p >= 0:
                allowed[:, c] = active[:, p]
        order = torch.argsort(pre.masked_fill(~allowed, -np.inf), dim=1, descending=True)[:, :k]
        keep = torch.zeros_like(pre).scatter(1, order, 1.0) * allowed
        codes.append(F.relu(pre) * keep)
        masks.append(allowed)
        active = codes[-1] > 0
    return codes, masks


def dense_loss(model, x):
    """Sum of the prefix losses (Eq. 7) and the parent-gated AuxK (Eq. 8), densely, with
    the dead sets the model's counters hold."""
    cfg, norm = model.config, x.shape[0] * model.loss_scale
    codes, masks = dense_codes(model, x)
    prefix, terms = model.b_dec.expand_as(x), {}
    for li, level in enumerate(model.levels):
        prefix = prefix + codes[li] @ level.W_dec
        err = x - prefix
        terms[f"recon{li}"] = err.pow(2).sum() / norm
        dead = level.tokens_since_fired > cfg.dead_tokens
        n_dead = int(dead.sum())
        pre = (x - model.b_dec) @ level.W_enc.T + level.b_enc
        ok = dead[None, :] & masks[li]  # (B, w): dead, and the parent fired in the row
        order = torch.argsort(pre.masked_fill(~ok, -np.inf), dim=1, descending=True)
        keep = torch.zeros_like(pre).scatter(1, order[:, :min(cfg.aux_k[li], n_dead)], 1.0) * ok
        res = err.detach()
        aux = (res - (F.relu(pre) * keep) @ level.W_dec).pow(2).sum() / res.pow(2).sum()
        terms[f"auxk{li}"] = min(n_dead / cfg.aux_k[li], 1.0) * aux if n_dead else 0 * aux
    total = sum(t for name, t in terms.items() if name.startswith("recon"))
    total = total + cfg.aux_coef * sum(t for name, t in terms.items() if name.startswith("auxk"))
    return terms, total


# Level 1: children 0-5 under parent 0, child 6 under parent 1, child 7 under the root;
# level 2 (when present): two children per level-1 feature, the last two under the root.
PARENTS = [[0, 0, 0, 0, 0, 0, 1, -1], [*np.repeat(np.arange(7), 2), -1, -1]]


@pytest.mark.parametrize("widths", [(4, 8), (4, 8, 16)])
@pytest.mark.parametrize("seed", range(3))
def test_codes_match_the_dense_masked_topk(widths, seed):
    model, x = make_nested(widths, seed, parents=PARENTS)
    with torch.no_grad():
        codes = model(x)
    expected, masks = dense_codes(model, x)
    for level, width in enumerate(widths):
        dense = torch.zeros(B, width, dtype=x.dtype).scatter(1, codes.indices[level], codes.values[level])
        torch.testing.assert_close(dense, expected[level])
        assert not bool(((dense > 0) & ~masks[level]).any())  # coverage: P(parent | child) = 1
    # Rows where parent 0 is silent have only child 6 (if parent 1 fires) and the root's
    # child 7 to choose from: fewer than k, so the other slots hold code 0.
    silent = expected[0][:, 0] == 0
    assert bool(silent.any()) and bool((expected[1][silent, :6] == 0).all())


def test_prefix_losses_and_gated_auxk_match_the_dense_computation():
    model, x = make_nested((4, 8, 16), seed=1, parents=PARENTS, aux_coef=0.5, aux_k=(2, 3, 4))
    x = x[:4]  # few rows: some features of every level below the first stay silent
    with torch.no_grad():
        for level in model.levels:  # silent for ages: dead unless it fires in this batch
            level.tokens_since_fired.fill_(100)
    out = model.loss(x)
    assert all(int((lv.tokens_since_fired > 100).sum()) > 0 for lv in model.levels[1:])
    terms, total = dense_loss(model, x)
    assert set(out.terms) == set(terms)
    for name, value in terms.items():
        torch.testing.assert_close(out.terms[name], value.detach(), msg=name)
    assert float(out.terms["auxk2"]) > 0
    torch.testing.assert_close(out.loss, total)
    params = [p for level in model.levels for p in (level.W_enc, level.b_enc, level.W_dec)] + [model.b_dec]
    ours = torch.autograd.grad(out.loss, params)
    for a, b in zip(ours, torch.autograd.grad(total, params)):
        torch.testing.assert_close(a, b)
    # The finest prefix is the model's reconstruction and uses every level.
    codes, _ = dense_codes(model, x)
    x_hat = model.b_dec + sum(z @ lv.W_dec for z, lv in zip(codes, model.levels))
    torch.testing.assert_close(out.sq_error, (x - x_hat).pow(2).sum().detach())


def test_capacity_splits_every_step_loss_among_the_parents_that_fired():
    model, x = make_nested((4, 8, 16), seed=2, parents=PARENTS, aux_coef=0.5)
    expected = [torch.zeros(5, dtype=x.dtype), torch.zeros(9, dtype=x.dtype)]
    for step in range(3):
        batch = x[step * 5 : step * 5 + 8]  # different rows fire different parents
        loss = model.loss(batch).loss.detach()
        codes, _ = dense_codes(model, batch)
        for li in range(2):
            fired = torch.cat([(codes[li] > 0).any(dim=0), torch.ones(1, dtype=torch.bool)]).double()
            expected[li] += fired * loss / fired.sum()
        model.after_optimizer_step()
    for level, capacity in zip(model.levels[1:], expected):
        torch.testing.assert_close(level.capacity, capacity)
    assert int(model.step) == 3


def best_min_ratio(capacity, n_children, eligible):
    """max over every allocation of ``min_{p: k_p > 0} C_p / k_p``, by enumeration."""
    bidders = [p for p in range(len(capacity)) if eligible[p] and capacity[p] > 0]
    best = -np.inf
    for split in itertools.product(range(n_children + 1), repeat=len(bidders)):
        if sum(split) == n_children:
            best = max(best, min(capacity[p] / k for p, k in zip(bidders, split) if k > 0))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_greedy_quotas_reach_the_best_smallest_capacity_per_child(seed):
    rng = np.random.RandomState(seed)
    capacity = rng.exponential(size=5) * (rng.rand(5) > 0.2)  # some parents never fired
    capacity[-1] += 0.1  # the root always fires
    eligible = rng.rand(5) > 0.25
    eligible[-1] = True  # the root
    n = int(rng.randint(1, 8))
    quotas = greedy_quotas(torch.tensor(capacity), n, torch.tensor(eligible)).numpy()
    assert quotas.sum() == n and np.all(quotas[~eligible | (capacity == 0)] == 0)
    ratio = min(capacity[p] / q for p, q in enumerate(quotas) if q > 0)
    assert ratio == pytest.approx(best_min_ratio(capacity, n, eligible), rel=1e-12)


def test_greedy_quotas_spread_evenly_without_capacity():
    quotas = greedy_quotas(torch.zeros(4), 7, torch.tensor([True, False, True, True]))
    assert quotas.tolist() == [3, 0, 2, 2]


def reference_moves(slots, dead, quotas):
    """Algorithm 2's moves with plain loops: over-full parents offer dead children."""
    slots, n_slots = list(slots), len(quotas)
    counts = [slots.count(p) for p in range(n_slots)]
    offers = []
    for p in range(n_slots):
        mine = [c for c in range(len(slots)) if slots[c] == p and dead[c]]
        offers += mine[: max(0, counts[p] - quotas[p])]
    places = [p for p in range(n_slots) for _ in range(max(0, quotas[p] - counts[p]))]
    for c, p in zip(offers, places):
        slots[c] = p
    return slots


@pytest.mark.parametrize("seed", range(5))
def test_moves_match_a_loop_over_parents(seed):
    rng = np.random.RandomState(seed)
    slots, dead = rng.randint(0, 5, 20), rng.rand(20) < 0.5
    quotas = np.bincount(rng.randint(0, 5, 20), minlength=5)
    moved = move_dead_children(torch.tensor(slots), torch.tensor(dead), torch.tensor(quotas))
    assert moved.tolist() == reference_moves(slots, dead, quotas)
    assert np.all((moved.numpy() == slots) | dead)  # only dead children ever move


def test_one_allocation_round_by_hand():
    """Parent 2 never fired: its dead children go to the parents with the most capacity."""
    model, _ = make_nested((3, 6), parents=[[0, 0, 1, 1, 2, 2]], eligible_tokens=50, dead_tokens=100)
    top, low = model.levels
    with torch.no_grad():
        top.tokens_since_fired.copy_(torch.tensor([0, 10, 10**4]))  # parent 2 is not eligible
        low.tokens_since_fired.copy_(torch.tensor([0, 500, 0, 500, 500, 500]))  # 1, 3, 4, 5 dead
        low.capacity.copy_(torch.tensor([6.0, 3.0, 0.0, 1.0]))  # parents 0, 1, 2, root
    assert greedy_quotas(low.capacity, 6, torch.tensor([True, True, False, True])).tolist() == [4, 2, 0, 0]
    model.reallocate()
    # Parent 2 holds 2 over its quota 0 and both are dead; parent 0 is 2 short.
    assert low.parent_index.tolist() == [0, 0, 1, 1, 0, 0]
    assert low.capacity.abs().sum() == 0  # capacities start again after a round


def test_schedule_grows_the_interval_then_resets_to_the_root():
    model, x = make_nested((3, 6), realloc_first=2, realloc_growth=2.0, realloc_max=5,
                           root_reset_step=14)
    rounds = []
    model.reallocate = lambda: rounds.append(int(model.step))
    low = model.levels[1]
    with torch.no_grad():
        low.tokens_since_fired.copy_(torch.tensor([0, 500, 0, 0, 500, 0]))
    for _ in range(20):
        model.after_optimizer_step()
        if int(model.step) == 13:
            assert low.parent_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert rounds == [2, 6, 11]  # intervals 2, 4, then min(8, 5) = 5; none after the reset
    assert low.parent_index.tolist() == [0, -1, 1, 1, -1, 2]  # the dead joined the root


def test_training_moves_away_the_children_of_a_parent_that_cannot_fire():
    """The whole loop (capacities, schedule, eligibility, moves) through the trainer: a
    parent whose bias forbids it to fire loses its children, which are never allowed to
    fire and so die, at the first reallocation after the dead window (4 steps here)."""
    X = torch.from_numpy(make_hierarchical_activations(
        n_samples=600, n_features=16, n_parents=6, n_children=3, subspace_dim=2,
        random_state=0)[0])
    config = NestedConfig(n_features=16, widths=(6, 18), k=2, aux_k=(8, 8), dead_tokens=200,
                          eligible_tokens=100, realloc_first=10, realloc_max=10, root_reset_step=1000)
    model = NestedSAE(config, dtype=torch.float64)
    model.reset_parameters(torch.Generator().manual_seed(0))
    model.init_from_data(X)
    with torch.no_grad():
        model.levels[0].b_enc[2] = -1e6
    trainer = Trainer(model, TrainConfig(learning_rate=1e-2, total_steps=30, warmup_steps=3))
    rounds = []
    reallocate = model.reallocate
    model.reallocate = lambda: rounds.append(int(model.step)) or reallocate()
    for step in range(30):
        trainer.step(X[(step % 12) * 50 : (step % 12 + 1) * 50])
    low = model.levels[1]
    assert rounds == [10, 20, 30]
    assert int(model.levels[0].tokens_since_fired[2]) == 30 * 50  # never fired
    assert 2 not in low.parent_index.tolist()  # parent 2 held children 6-8 at the start
    # Moved under parents that fire, they fire again (measured: in the last batch).
    assert bool((low.tokens_since_fired[6:9] < 200).all())
    assert low.capacity.abs().sum() == 0  # a round at step 30 restarted them


# --------------------------------------------------------------- estimator
@pytest.fixture(scope="module")
def small_tree():
    # The generator's defaults (64 features, 24 parents x 4 children in 3-dim subspaces,
    # 3 active parents a row) on 6,000 rows.
    return make_hierarchical_activations(n_samples=6000, random_state=0)


def test_nested_recovers_the_generator_tree(small_tree):
    """x = parents + children is what cumulative levels reconstruct: level 0 learns the
    parents, level 1 the children inside the rows where their parent fires. Measured
    (seeds 0-3, these settings, 720 steps): parents 0.875-0.917, children 0.854-0.875,
    children under their true parent's match 0.915-0.951; benchmarks/recovery.py has the
    80-epoch figures."""
    X, parents, children, tree = small_tree
    est = HierarchicalSparseAutoencoder(architecture="nested", n_parents=24, n_children=6, k=3,
                                        max_iter=30, batch_size=256, learning_rate=1e-2,
                                        random_state=0).fit(X)
    r = tree_recovery(parents, children, tree, est.parent_components_, est.child_components_,
                      est.child_parent_)
    assert r["parent_recovered"] >= 0.8 and r["child_recovered"] >= 0.8
    assert r["children_under_true_parent"] >= 0.8
    codes = est.encode(X)
    h = hierarchy_consistency(codes.parent, codes.child, est.child_parent_)
    assert h["p_parent_given_child"] == 1.0  # activation coverage, exactly
    assert est.score(X) > 0.85


def test_estimator_exports_the_tree_it_trained_with(small_tree):
    X = small_tree[0][:1500]
    est = HierarchicalSparseAutoencoder(architecture="nested", n_parents=4, n_children=3, n_levels=3,
                                        k=2, max_iter=4, batch_size=100, random_state=0).fit(X)
    model = est._model_from_state(est._model_state, torch.device("cpu"))
    assert [c.shape[0] for c in est.components_by_level_] == [4, 12, 36]
    for level, index in enumerate(est.parent_index_by_level_):
        np.testing.assert_array_equal(index, model.levels[level].parent_index.numpy())
    np.testing.assert_array_equal(est.child_parent_, est.parent_index_by_level_[1])
    codes = est.encode(X)
    for upper, lower, index in zip(codes.levels[:-1], codes.levels[1:], est.parent_index_by_level_[1:]):
        child, parent = lower.toarray() != 0, upper.toarray() != 0
        under = index >= 0
        assert not np.any(child[:, under] & ~parent[:, index[under]])  # every level, every row
    # Levels add up: level l reconstructs with the codes of levels 0..l.
    Z = est.transform(X)
    middle = sum(c @ comp for c, comp in zip(codes.levels[:2], est.components_by_level_[:2]))
    np.testing.assert_allclose(est.inverse_transform(Z, level=1), middle + est.intercept_,
                               rtol=1e-5, atol=1e-6)
    assert all(l0 <= 2 for l0 in est.l0_)


def test_a_reallocated_tree_survives_save_and_load(tmp_path):
    X = make_hierarchical_activations(n_samples=1200, n_features=16, n_parents=6, n_children=3,
                                      subspace_dim=2, n_active=2, random_state=0)[0]
    est = HierarchicalSparseAutoencoder(architecture="nested", n_parents=2, n_children=16, k=1,
                                        batch_size=100, max_iter=3, random_state=0).fit(X)
    # Measured: 3 dead children move at step 15, one joins the root at the reset (18).
    assert np.sum(est.child_parent_ != np.arange(32) // 16) == 4 and -1 in est.child_parent_
    save(est, tmp_path)
    loaded = load(tmp_path)
    np.testing.assert_array_equal(loaded.child_parent_, est.child_parent_)
    for a, b in zip(loaded.encode(X).levels, est.encode(X).levels):
        assert (a != b).nnz == 0
    assert loaded.score(X) == est.score(X)


def test_the_three_architectures_swap_in_a_grid_search(small_tree):
    X = small_tree[0][:1200]
    base = HierarchicalSparseAutoencoder(n_parents=6, n_children=2, subspace_dim=2, k=2,
                                         max_iter=2, batch_size=100, random_state=0)
    grid = {"architecture": ["routed", "tree", "nested"]}
    search = GridSearchCV(base, grid, cv=2).fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 3 and np.all(np.isfinite(scores))
    for architecture in grid["architecture"]:
        est = clone(base).set_params(architecture=architecture).fit(X)
        codes = est.encode(X)
        assert [lv.shape for lv in codes.levels] == [(1200, 6), (1200, 12)]
        assert est.child_parent_.shape == (12,) and len(est.l0_) == 2
        assert est.transform(X).shape == (1200, 18)


def test_nested_refuses_settings_of_other_architectures():
    X = np.random.RandomState(0).rand(30, 5)
    with pytest.raises(ValueError, match="architecture='nested' needs n_levels >= 2"):
        HierarchicalSparseAutoencoder(architecture="nested", n_parents=4, k=2, n_levels=1).fit(X)
    with pytest.raises(ValueError, match="sparsity='l0' needs architecture='tree'"):
        HierarchicalSparseAutoencoder(architecture="nested", n_parents=4, k=2, sparsity="l0").fit(X)
