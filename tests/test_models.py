"""Every model implements the written interface and returns the one code form.

The estimators and the training loop rely on nothing else, so these checks run the
same way over every architecture: codes per level, reconstructions rebuilt by hand from
the exported dictionary, parent links, integer ranges.
"""

import inspect

import pytest
import torch

from sklearn_hsae._config import FlatConfig, NestedConfig, RoutedConfig, TreeConfig
from sklearn_hsae._models import (
    Codes, Dictionary, FlatSAE, LossOutput, NestedSAE, RoutedSAE, SAEModel, TreeSAE)

D = 10
MODELS = {
    "routed": (RoutedSAE, RoutedConfig(n_features=D, n_parents=6, n_children=3, subspace_dim=2, k=2)),
    "flat": (FlatSAE, FlatConfig(n_features=D, n_latents=12, k=3)),
    "batchtopk": (FlatSAE, FlatConfig(n_features=D, n_latents=12, k=3, activation="batchtopk")),
    "tree": (TreeSAE, TreeConfig(n_features=D, widths=(3, 6, 12), k=2, reparent_every=1)),
    "tree_l0": (TreeSAE, TreeConfig(n_features=D, widths=(4, 8), k=2, sparsity="l0")),
    "nested": (NestedSAE, NestedConfig(n_features=D, widths=(3, 6, 12), k=2, aux_k=(3, 5, 5),
                                       realloc_first=1)),
}


def build(name, seed=0):
    cls, config = MODELS[name]
    model = cls(config, dtype=torch.float64)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    x = torch.randn(40, D, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    model.init_from_data(x)
    return model, x


@pytest.mark.parametrize("name", MODELS)
def test_model_has_every_method_of_the_interface(name):
    cls, _ = MODELS[name]
    wanted = {n for n, v in vars(SAEModel).items() if inspect.isfunction(v)}
    assert wanted >= {"forward", "loss", "dictionary", "clip_groups", "integer_ranges", "on_fit_end"}
    missing = {n for n in wanted if not callable(getattr(cls, n, None))}
    assert not missing
    assert isinstance(cls.cumulative, bool)


@pytest.mark.parametrize("name", MODELS)
def test_codes_rebuild_every_level_from_the_dictionary(name):
    """x_hats[l] = codes of level l (and of the levels above it when cumulative) times the
    exported unit directions, plus that level's bias."""
    model, x = build(name)
    model.eval()
    with torch.no_grad():
        codes = model(x)
    assert isinstance(codes, Codes)
    dictionary = model.dictionary()
    assert isinstance(dictionary, Dictionary)
    widths = model.config.widths
    assert len(codes.values) == len(codes.indices) == len(codes.x_hats) == len(widths)
    for level, width in enumerate(widths):
        comp = dictionary.components[level]
        assert comp.shape == (width, D)
        torch.testing.assert_close(comp.norm(dim=1), torch.ones(width, dtype=comp.dtype))
        assert dictionary.parent_index[level].shape == (width,)
        assert int(dictionary.parent_index[level].max()) < (widths[level - 1] if level else 0)
    dense = [torch.zeros(x.shape[0], w, dtype=x.dtype).scatter_add(1, i, v)
             for v, i, w in zip(codes.values, codes.indices, widths)]
    for level in range(len(widths)):
        used = range(level + 1) if type(model).cumulative else [level]
        rebuilt = sum(dense[l] @ dictionary.components[l] for l in used) + dictionary.intercepts[level]
        torch.testing.assert_close(rebuilt, codes.x_hats[level])
    torch.testing.assert_close(codes.x_hat, codes.x_hats[-1])


@pytest.mark.parametrize("name", MODELS)
def test_loss_reports_the_l0_of_every_level(name):
    model, x = build(name)
    model.train()
    out = model.loss(x)
    assert isinstance(out, LossOutput) and out.loss.requires_grad
    model.eval()
    with torch.no_grad():
        codes = model(x)
    expected = torch.stack([(v != 0).sum(1).double().mean() for v in codes.values])
    if name == "batchtopk":  # training selects per batch, inference by threshold
        assert float(out.l0.mean()) == pytest.approx(3.0)
    else:
        torch.testing.assert_close(out.l0, expected)


@pytest.mark.parametrize("name", MODELS)
def test_dictionary_writes_into_given_buffers(name):
    model, _ = build(name)
    reference = model.dictionary()
    out = [torch.full_like(c, float("nan")) for c in reference.components]
    written = model.dictionary(out=out)
    for a, b, c in zip(out, written.components, reference.components):
        assert a.data_ptr() == b.data_ptr()
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("name", MODELS)
def test_clip_groups_cover_every_parameter_once(name):
    model, _ = build(name)
    grouped = [id(p) for group in model.clip_groups() for p in group]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_every_integer_tensor_has_a_declared_range(name):
    model, _ = build(name)
    ranges = model.integer_ranges()
    for key, value in model.state_dict().items():
        if not value.dtype.is_floating_point:
            low, high = ranges[key]
            assert int(value.min()) >= low and (high is None or int(value.max()) < high)


def test_routed_codes_fold_the_child_norms():
    """The routed model works with unnormalised child atoms D_child @ W_up; its codes
    multiply unit directions, so a child's code is its activation times that norm."""
    model, x = build("routed")
    with torch.no_grad():
        model.W_up.mul_(3.0)  # child directions of norm ~3
        raw = model._forward(x).codes
        codes = model(x)
    norms = model.child_norms()
    torch.testing.assert_close(codes.values[1], raw.child_values * norms[raw.child_indices])
    assert float(norms.min()) > 2.0
