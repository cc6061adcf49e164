"""sklearn_hsae.io.export_saelens: the SAELens layout, and SAELens' encoding of every flat level.

SAELens itself is an optional extra; without it the files are read back with plain
``safetensors`` and ``json`` and encoded as SAELens 6.x would (``_saelens_encode``).
"""

import json

import numpy as np
import pytest
import torch
from model_files import MODELS, activations
from safetensors.numpy import load_file

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io import export_saelens

TREE = dict(
    architecture="tree", n_levels=3, n_parents=4, n_children=2, k=2, max_iter=2, batch_size=64
)
TREES = {  # every level a full SAE: TopK, or JumpReLU for sparsity="l0"
    "tree-topk-global": lambda: HierarchicalSparseAutoencoder(**TREE, random_state=0),
    "tree-l0-global-f64": lambda: HierarchicalSparseAutoencoder(
        **TREE, sparsity="l0", dtype="float64", random_state=1
    ),
    "tree-l0-unit": lambda: HierarchicalSparseAutoencoder(
        **TREE, sparsity="l0", normalize="unit", random_state=0
    ),
}


@pytest.fixture(scope="module")
def X():
    return activations()


@pytest.fixture(scope="module")
def fitted(X):
    makers = {**{n: m for n, m in MODELS.items() if "names" not in n}, **TREES}
    return {name: make().fit(X) for name, make in makers.items()}


def _saelens_encode(cfg, w, X):
    """SAELens 6.x TopK / JumpReLU encode, as read from sae_lens/saes/*.py, in numpy."""
    x = X.astype(np.float64)
    if cfg["normalize_activations"] == "constant_norm_rescale":
        x = x * np.sqrt(cfg["d_in"]) / np.linalg.norm(x, axis=1, keepdims=True)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "topk":
        top = np.argsort(-pre, axis=1, kind="stable")[:, : cfg["k"]]
        acts = np.zeros_like(pre)
        np.put_along_axis(acts, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
        return acts
    return np.maximum(pre, 0) * (pre > w["threshold"])


def _our_top_level(est, X):
    return (
        est.encode(X).parent if isinstance(est, HierarchicalSparseAutoencoder) else est.transform(X)
    )


@pytest.mark.parametrize("name", [n for n in MODELS if "names" not in n and n != "tree-3-levels"])
def test_export_saelens_layout_and_encoding(name, fitted, X, tmp_path):
    est = fitted[name]
    kwargs = {"center_writing_weights": False}
    metadata = {"hook_name": "blocks.0.hook_resid_post", "model_from_pretrained_kwargs": kwargs}
    export_saelens(est, tmp_path, metadata=metadata)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    w = load_file(tmp_path / "sae_weights.safetensors")
    batchtopk = getattr(est, "activation", "topk") == "batchtopk"
    d_sae = est.components_by_level_[0].shape[0]  # the first level's width
    assert cfg["architecture"] == ("jumprelu" if batchtopk else "topk")
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (16, d_sae, est.dtype)
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    assert cfg["metadata"]["model_from_pretrained_kwargs"] == kwargs
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    assert w["W_enc"].shape == (16, d_sae) and w["W_dec"].shape == (d_sae, 16)
    assert all(a.dtype == np.dtype(est.dtype) for a in w.values())
    ours = _our_top_level(est, X).toarray()
    theirs = _saelens_encode(cfg, w, X)
    np.testing.assert_array_equal(theirs != 0, ours != 0)
    if est.normalize == "unit":  # SAELens reports unit-norm units, we report input units
        ours = ours / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def test_export_saelens_refuses_levels_without_a_flat_form(fitted, tmp_path):
    with pytest.raises(ValueError, match="level='child' has no SAELens form"):
        export_saelens(fitted["hsae-unit-f64"], tmp_path, level="child")
    with pytest.raises(ValueError, match="metadata must hold JSON values only"):
        export_saelens(fitted["sae-topk"], tmp_path, metadata={"when": object()})
    with pytest.raises(TypeError, match="export_saelens\\(\\) exports"):
        export_saelens(object(), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", list(TREES))
@pytest.mark.parametrize("level", [1, 2])
def test_export_saelens_tree_level_encodes_like_ours(name, level, fitted, X, tmp_path):
    """Each exported tree level, applied as SAELens would, picks our latents row by row."""
    est = fitted[name]
    export_saelens(est, tmp_path, level=level)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    w = load_file(tmp_path / "sae_weights.safetensors")
    width = 4 * 2**level
    assert cfg["architecture"] == ("jumprelu" if est.sparsity == "l0" else "topk")
    assert (cfg["d_in"], cfg["d_sae"]) == (16, width) and w["W_enc"].shape == (16, width)
    assert cfg.get("k") == (None if est.sparsity == "l0" else 2)
    ours = est.encode(X).levels[level]
    theirs = _saelens_encode(cfg, w, X)
    for row in range(len(X)):
        picked = ours.indices[ours.indptr[row] : ours.indptr[row + 1]]
        np.testing.assert_array_equal(np.flatnonzero(theirs[row]), picked, err_msg=f"row {row}")
    assert ours.nnz > len(X)  # not a trivially empty code
    dense = ours.toarray()
    if est.normalize == "unit":  # SAELens reports unit-norm units, we report input units
        dense = dense / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(theirs, dense, rtol=1e-4, atol=1e-4 * np.abs(dense).max())


def test_export_saelens_level_names_and_indices_agree(fitted, tmp_path):
    est = fitted["tree-topk-global"]
    for alias, index in (("parent", 0), ("child", 1), (np.int64(2), 2)):
        export_saelens(est, tmp_path / str(alias), level=alias)
        export_saelens(est, tmp_path / f"{index}-int", level=index)
        a = load_file(tmp_path / str(alias) / "sae_weights.safetensors")
        b = load_file(tmp_path / f"{index}-int" / "sae_weights.safetensors")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        np.testing.assert_array_equal(a["W_dec"], est.components_by_level_[index])


BAD_LEVELS = {  # estimator -> (bad levels, the valid choices the message must name)
    "tree-topk-global": (
        [3, -1, "grandchild", 1.5, True, None],
        "0 (or 'parent'), 1 (or 'child'), 2",
    ),
    "hsae-unit-f64": ([2, -1, "level1", True], "0 (or 'parent')"),
    "sae-topk": ([1, "child", -1, 0.0], "0 (or 'parent')"),
}


@pytest.mark.parametrize("name", BAD_LEVELS)
def test_export_saelens_bad_levels_name_the_valid_choices(name, fitted, tmp_path):
    levels, valid = BAD_LEVELS[name]
    for level in levels:
        with pytest.raises(ValueError, match="levels with a SAELens form") as info:
            export_saelens(fitted[name], tmp_path, level=level)
        message = str(info.value)
        assert message.endswith(f"are {valid}."), message
        assert f"level={level!r}" in message and "Config" not in message, message
    assert not any(tmp_path.iterdir())


def test_export_saelens_refuses_routed_children_with_the_reason(fitted, tmp_path):
    for level in (1, "child"):
        with pytest.raises(ValueError) as info:
            export_saelens(fitted["hsae-unit-f64"], tmp_path, level=level)
        message = str(info.value)
        assert "private subspace" in message and "not a flat SAE" in message
        assert "Config" not in message and "0 (or 'parent')" in message


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)
def test_saelens_reads_our_export(tmp_path):
    """Needs sae_lens (the [saelens] extra), which `make test` does not install."""
    sae_lens = pytest.importorskip("sae_lens")
    X, *_ = make_hierarchical_activations(
        n_samples=3000,
        n_features=64,
        n_parents=32,
        n_children=4,
        subspace_dim=3,
        n_active=4,
        random_state=0,
    )
    X = X * 37.0 + 5.0  # raw-looking activations: scale and offset
    models = {
        "hsae-global": HierarchicalSparseAutoencoder(
            n_parents=32, n_children=4, subspace_dim=3, k=4
        ),
        "hsae-unit": HierarchicalSparseAutoencoder(
            n_parents=32, n_children=4, subspace_dim=3, k=4, normalize="unit"
        ),
        "sae-topk-f64": SparseAutoencoder(n_components=48, k=5, dtype="float64", normalize=None),
        "sae-batchtopk": SparseAutoencoder(
            n_components=48, k=5, activation="batchtopk", matryoshka_prefixes=[12, 24]
        ),
    }
    tree = dict(architecture="tree", n_levels=3, n_parents=16, n_children=2, k=4)
    trees = {  # (estimator, level): a tree's finer levels are full SAEs too
        "tree-topk-level2": (HierarchicalSparseAutoencoder(**tree), 2),
        "tree-l0-level1": (HierarchicalSparseAutoencoder(**tree, sparsity="l0"), 1),
    }
    levels = {**{name: (est, 0) for name, est in models.items()}, **trees}
    for name, (est, level) in levels.items():
        est.set_params(max_iter=3, batch_size=256, random_state=0).fit(X)
        export_saelens(est, tmp_path / name, level=level)
        sae = sae_lens.SAE.load_from_disk(tmp_path / name)
        with torch.no_grad():
            x = torch.tensor(X, dtype=sae.dtype)
            acts, recon = sae.encode(x).numpy(), sae(x).numpy()
        ours = est.encode(X).levels[level] if level else _our_top_level(est, X)
        active = [np.flatnonzero(row) for row in acts]
        mismatched = sum(
            not np.array_equal(a, ours.indices[ours.indptr[i] : ours.indptr[i + 1]])
            for i, a in enumerate(active)
        )
        assert mismatched == 0, name
        dense = ours.toarray()
        if est.normalize == "unit":
            dense = dense / np.linalg.norm(X, axis=1, keepdims=True)
        np.testing.assert_allclose(acts, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())
        # SAELens reconstructs from this level alone: for the H-SAE the parents-only x_hat.
        if getattr(est, "architecture", None) == "tree":
            expected = ours @ est.components_by_level_[level] + est.intercept_by_level_[level]
        elif isinstance(est, HierarchicalSparseAutoencoder):
            expected = ours @ est.parent_components_ + est.intercept_
        else:
            expected = est.inverse_transform(ours)
        np.testing.assert_allclose(recon, expected, rtol=1e-4, atol=1e-4 * np.abs(X).max())


def test_nested_levels_below_the_first_are_refused_with_the_reason(tmp_path):
    from model_files import MODELS, activations

    est = MODELS["nested-3-levels"]().fit(activations())
    for level in (1, 2, "child"):
        with pytest.raises(ValueError, match=r"picks its features only among those whose parent fired"):
            export_saelens(est, tmp_path, level=level)
