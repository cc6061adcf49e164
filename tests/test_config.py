"""_config.py: configs built from estimator parameters, derived defaults, size checks."""

import dataclasses

import pytest

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._config import (
    MODEL_CONFIGS,
    FlatConfig,
    NestedConfig,
    RoutedConfig,
    TrainConfig,
    TreeConfig,
    aux_k,
    auto_learning_rate,
    dead_tokens,
    matryoshka_widths,
)


def params(est, **kw):
    return est.set_params(**kw).get_params(deep=False)


def test_every_field_has_a_docstring_in_the_source():
    """Each config field is documented right under it (the house rule for configs)."""
    import inspect

    for cls in (RoutedConfig, FlatConfig, TreeConfig, NestedConfig, TrainConfig):
        body = inspect.getsource(cls)
        for field in dataclasses.fields(cls):
            if field.name in ("adam_betas", "adam_eps"):
                continue  # Adam's own constants
            line = next(l for l in body.splitlines() if l.strip().startswith(f"{field.name}:"))
            after = body.splitlines()[body.splitlines().index(line) + 1].strip()
            assert after.startswith('"""'), f"{cls.__name__}.{field.name} has no docstring"
    assert set(MODEL_CONFIGS) == {"RoutedConfig", "FlatConfig", "TreeConfig", "NestedConfig"}


def test_derived_defaults():
    assert dead_tokens(n_samples=500, batch_size=1024) == 1024  # at least one batch
    assert dead_tokens(n_samples=10**9, batch_size=1024) == 10_000_000  # Gao et al.'s cap
    assert aux_k(n_features=576, width=4096) == 288 and aux_k(576, 100) == 100 and aux_k(1, 8) == 1
    assert auto_learning_rate(2**14) == pytest.approx(8e-4)
    assert auto_learning_rate(2**16) == pytest.approx(4e-4)
    assert auto_learning_rate(16) == 5e-3  # the cap


def test_routed_config_from_params():
    est = HierarchicalSparseAutoencoder(n_parents=32, n_children=4, subspace_dim=3, k=5, batch_size=64)
    config = RoutedConfig.from_params(params(est), n_features=16, n_samples=1000, total_steps=50)
    assert (config.n_parents, config.n_children, config.subspace_dim, config.k) == (32, 4, 3, 5)
    assert config.widths == (32, 128) and config.lr_widths == (32,)
    assert config.aux_k == 8 and config.dead_tokens == 1000
    assert config.feature_names("m")[:2] == ["m_parent0", "m_parent1"]
    assert config.feature_names("m")[32:34] == ["m_child0.0", "m_child0.1"]


def test_tree_config_reparents_twenty_times_per_fit():
    est = HierarchicalSparseAutoencoder(architecture="tree", n_parents=4, n_children=3, n_levels=3, k=2)
    config = TreeConfig.from_params(params(est), 8, 100, total_steps=400)
    assert config.widths == (4, 12, 36) and config.reparent_every == 20
    assert config.lr_widths == (4, 12, 36)  # one learning rate per level, from its width
    assert TreeConfig.from_params(params(est), 8, 100, None).reparent_every == 5000
    assert TreeConfig.from_params(params(est, reparent_every=7), 8, 100, 400).reparent_every == 7


def test_nested_config_keeps_paper_3s_schedule_as_fractions_of_the_run():
    est = HierarchicalSparseAutoencoder(architecture="nested", n_parents=4, n_children=3, n_levels=3,
                                        k=2, batch_size=64)
    # Paper 3's code: 3,000 / 10,000 / 50,000 of 97,657 steps.
    config = NestedConfig.from_params(params(est), 8, 1000, total_steps=97_657 // 10)
    assert config.widths == (4, 12, 36) and config.aux_k == (4, 4, 4) and config.lr_widths == (4, 12, 36)
    assert (config.realloc_first, config.realloc_max, config.root_reset_step) == (300, 1000, 5000)
    assert config.dead_tokens == 1000 and config.eligible_tokens == 1000  # at most the dead window
    stream = NestedConfig.from_params(params(est), 8, 10**9, None)
    assert (stream.realloc_first, stream.realloc_max, stream.root_reset_step) == (3000, 10_000, 50_000)
    assert stream.dead_tokens == 10_000_000 and stream.eligible_tokens == 50_000
    short = NestedConfig.from_params(params(est), 8, 1000, total_steps=3)
    assert (short.realloc_first, short.realloc_max, short.root_reset_step) == (1, 1, 2)
    assert config.feature_names("m")[4] == "m_level1_0"


def test_train_config_warmup_and_streaming():
    assert TrainConfig.from_params(0.01, (64,), 5000) == TrainConfig(0.01, 5000, 500)
    assert TrainConfig.from_params(0.01, (64,), 50_000).warmup_steps == 1000
    assert TrainConfig.from_params(0.01, (64,), 3).warmup_steps == 1
    assert TrainConfig.from_params("auto", (2**16,), None) == TrainConfig((pytest.approx(4e-4),), None, 100)


@pytest.mark.parametrize(
    "est, match",
    [
        (HierarchicalSparseAutoencoder(n_parents=8, k=11), r"k=11 active parents cannot exceed n_parents=8"),
        (HierarchicalSparseAutoencoder(architecture="tree", n_parents=8, k=11),
         r"k=11 active features per level cannot exceed the first level's width n_parents=8"),
        (HierarchicalSparseAutoencoder(n_levels=3), r"architecture='routed' has exactly two levels"),
        (HierarchicalSparseAutoencoder(sparsity="l0"), r"sparsity='l0' needs architecture='tree'"),
        (HierarchicalSparseAutoencoder(architecture="tree", n_levels=1), r"needs n_levels >= 2"),
        (HierarchicalSparseAutoencoder(architecture="nested", n_parents=8, k=11),
         r"k=11 active features per level cannot exceed the first level's width n_parents=8"),
        (HierarchicalSparseAutoencoder(architecture="nested", sparsity="l0"),
         r"architecture='nested' selects every level by TopK.*needs architecture='tree'"),
        (SparseAutoencoder(n_components=8, k=9), r"k=9 cannot exceed n_components=8"),
    ],
)
def test_each_architecture_refuses_sizes_in_its_own_terms(est, match):
    with pytest.raises(ValueError, match=match):
        est._model_config(n_features=16, n_samples=100)


def test_subspace_larger_than_the_input_warns_at_fit_only():
    import warnings

    import numpy as np

    est = HierarchicalSparseAutoencoder(n_parents=8, subspace_dim=6, k=2, max_iter=1)
    X = np.random.RandomState(0).randn(50, 4)
    with pytest.warns(UserWarning, match=r"subspace_dim=6 exceeds n_features=4.*at most 4 independent"):
        est.fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est._model_config(n_features=4, n_samples=100)  # building the config (io.load) is quiet
        est.set_params(subspace_dim=4)._model_config(n_features=4, n_samples=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.set_params(subspace_dim=4).fit(X)


@pytest.mark.parametrize(
    "given, expected",
    [(None, ()), ([8, 32], (8, 32, 64)), ([8, 32, 64], (8, 32, 64)), ([0.25, 0.5], (16, 32, 64)), ([64], (64,))],
)
def test_matryoshka_widths_accept_the_saelens_form(given, expected):
    assert matryoshka_widths(given, 64) == expected
