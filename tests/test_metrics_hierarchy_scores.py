"""hierarchy_scores on every architecture, fitted on the generator with a known tree.

A model whose tree matches the generator's must beat the same model scored with a random
tree: the control keeps the codes and decoder rows and only redraws every latent's parent.
The model that recovers the tree exactly is planted: the generator's own codes, directions
and tree.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.metrics import (
    composition,
    feature_splitting,
    hierarchy_scores,
    sibling_cooccurrence,
    tree_recovery,
)
from sklearn_hsae.metrics._scores import _flat_split

KEYS = {"p_parent_given_child", "p_child_given_parent", "hamming_rate", "sibling_cooccurrence",
        "composition", "hierarchy_mcs", "hierarchy_tree_structure", "feature_splitting", "tree",
        "n_levels"}
FIT = dict(max_iter=20, batch_size=256, random_state=0)


class TrueModel:
    """The generator's truth as a fitted estimator: its codes, directions and tree."""

    def __init__(self, codes, components, tree):
        self.levels, self.components_by_level_ = codes, components
        self.components_ = np.vstack(components)
        self.parent_index_by_level_ = [np.full(len(components[0]), -1), tree]

    def encode(self, X):
        return SimpleNamespace(levels=self.levels)

    def transform(self, X):
        return sp.hstack(self.levels, format="csr")


@pytest.fixture(scope="module")
def data():
    # 8 parents x 3 children in 2-d subspaces of R^32, 2 active parents a row.
    return make_hierarchical_activations(n_samples=4000, n_features=32, n_parents=8,
                                         n_children=3, subspace_dim=2, n_active=2,
                                         random_state=0, return_codes=True)


@pytest.fixture(scope="module")
def routed(data):
    return HierarchicalSparseAutoencoder(n_parents=8, n_children=3, subspace_dim=2, k=2,
                                         beta=2.0, **{**FIT, "max_iter": 40}).fit(data[0])


@pytest.fixture(scope="module")
def tree3(data):
    return HierarchicalSparseAutoencoder(architecture="tree", n_parents=4, n_children=2,
                                         n_levels=3, k=2, **FIT).fit(data[0])


def _random_tree(estimator, seed):
    """Every latent below the first level gets a parent drawn uniformly from the level above."""
    rng = np.random.default_rng(seed)
    levels = estimator.parent_index_by_level_
    return [levels[0], *(rng.integers(0, len(up), len(low)) for up, low in zip(levels, levels[1:]))]


def test_the_true_tree_beats_a_random_tree(data):
    X, parents, children, tree, parent_codes, child_codes = data
    true = TrueModel([parent_codes, child_codes], [parents, children], tree)
    own = hierarchy_scores(true, X)
    control = hierarchy_scores(true, X, parent_index=_random_tree(true, 0))
    assert set(own) == KEYS and own["tree"] == "own" and control["tree"] == "given"
    # Every child fires with its parent, and exactly one child of every active parent:
    # P(parent | child) = 1, a parent's three P(child | parent) sum to 1 (mean 1/3), the
    # OR of its children is the parent (Hamming 0), siblings never fire together.
    assert own["p_parent_given_child"] == 1.0
    assert own["p_child_given_parent"] == pytest.approx(1 / 3)
    assert own["hamming_rate"] == 0.0 and own["sibling_cooccurrence"] == 0.0
    # A child's probe finds its own and its parent's direction (measured 1.0; random 0.17).
    assert own["hierarchy_tree_structure"] >= 0.9
    assert control["hierarchy_tree_structure"] < 0.4
    assert control["p_parent_given_child"] < 0.5 and control["hamming_rate"] > 0.2
    assert control["sibling_cooccurrence"] > 0.0
    # What does not depend on the tree is the same for both.
    for key in ("composition", "hierarchy_mcs"):
        assert own[key] == control[key]
    assert own["composition"] == pytest.approx(composition(true.components_))


def test_routed_tree_beats_a_random_tree(data, routed):
    X, parents, children, tree = data[:4]
    # Among the children the model recovers, every one sits under its true parent's match.
    r = tree_recovery(parents, children, tree, routed.parent_components_,
                      routed.child_components_, routed.child_parent_)
    assert r["child_recovered"] >= 0.5 and r["children_under_true_parent"] == 1.0
    own = hierarchy_scores(routed, X)
    control = hierarchy_scores(routed, X, parent_index=_random_tree(routed, 0))
    # Routing: a child fires only under its parent, so P(parent | child) is exactly 1.
    assert own["p_parent_given_child"] == 1.0 and control["p_parent_given_child"] < 0.5
    # Measured: 1.0 own, 0.14 random.
    assert own["hierarchy_tree_structure"] > control["hierarchy_tree_structure"] + 0.5
    assert own["sibling_cooccurrence"] < control["sibling_cooccurrence"]
    assert own["hamming_rate"] < control["hamming_rate"]
    assert own["composition"] == pytest.approx(composition(routed))
    assert own["sibling_cooccurrence"] == sibling_cooccurrence(routed, X)["sibling_cooccurrence"]
    assert np.isnan(own["feature_splitting"])  # no tokens given


def test_three_level_tree(data, tree3):
    X = data[0]
    own = hierarchy_scores(tree3, X)
    control = hierarchy_scores(tree3, X, parent_index=_random_tree(tree3, 0)[1:])
    assert own["n_levels"] == 3 and own["tree"] == "own"
    # Measured: P(parent | child) 0.85 against 0.36, tree-structure 1.0 against 0.21.
    assert own["p_parent_given_child"] > control["p_parent_given_child"] + 0.15
    assert own["hierarchy_tree_structure"] > control["hierarchy_tree_structure"] + 0.3


def test_flat_sae_gets_a_posthoc_tree(data):
    X = data[0]
    sae = SparseAutoencoder(n_components=32, k=4, **FIT).fit(X)
    for posthoc in ("decoder", "coactivation"):
        scores = hierarchy_scores(sae, X, posthoc=posthoc)
        assert set(scores) == KEYS and scores["tree"] == "posthoc" and scores["n_levels"] == 2
        for key in ("p_parent_given_child", "sibling_cooccurrence", "hierarchy_mcs",
                    "hierarchy_tree_structure"):
            assert 0 <= scores[key] <= 1
    with pytest.raises(ValueError, match="A flat estimator gets a post-hoc tree"):
        hierarchy_scores(sae, X, parent_index=[np.full(32, -1)])
    with pytest.raises(TypeError, match="has no components_"):
        hierarchy_scores(SparseAutoencoder(), X)


def test_flat_split_by_hand():
    # Firing counts 1, 4, 0, 3, 2, 2, 0, 1: the most frequent quarter (8 // 4 = 2) is
    # latents 1 and 3; the other six are children, in column order.
    counts = [1, 4, 0, 3, 2, 2, 0, 1]
    codes = sp.csr_matrix(np.array([[1.0] * c + [0.0] * (4 - c) for c in counts]).T)
    # Children lean on parent 1 (e1) or parent 3 (e3) with cosines: child 0 = e0 + 2 e1:
    # 0.894; 2 = e2 + e1: 0.707; 4 = 2 e4 + e1: 0.447; 5 = e5 + e3: 0.707; 6 = e6 + 3 e3:
    # 0.949; 7 = e7 + e3: 0.707.
    D = np.eye(8)
    D[[0, 2, 4], 1] = [2.0, 1.0, 0.5]
    D[[5, 6, 7], 3] = [1.0, 3.0, 1.0]
    levels, parts, tree = _flat_split(SimpleNamespace(), codes, D, "decoder")
    assert [lv.shape[1] for lv in levels] == [2, 6]
    np.testing.assert_array_equal(parts[0], D[[1, 3]])
    np.testing.assert_array_equal(tree[0], [-1, -1])
    # floor(0.2 * 6) = 1 least similar child stays unassigned: child 4 (0.447).
    np.testing.assert_array_equal(tree[1], [0, 0, -1, 1, 1, 1])
    np.testing.assert_array_equal(levels[1].toarray(), codes[:, [0, 2, 4, 5, 6, 7]].toarray())
    # A Matryoshka SAE: the first group (3 latents) is the parent level.
    levels, parts, _ = _flat_split(SimpleNamespace(matryoshka_prefixes=[3]), codes, D, "decoder")
    np.testing.assert_array_equal(parts[0], D[:3])
    assert [lv.shape[1] for lv in levels] == [3, 5]


def test_feature_splitting_through_hierarchy_scores(data, routed):
    X = data[0]
    # Tokens: the letter of the row's first active parent (the routed model's parent
    # level sees it), a word per (letter, second letter) so every letter has many words.
    parent_of_row = np.asarray(routed.encode(X).parent.argmax(axis=1)).ravel()
    second = np.random.default_rng(0).integers(0, 6, len(X))
    tokens = np.array([" " + "abcdefgh"[p] + "uvwxyz"[s] + "o" for p, s in zip(parent_of_row, second)])
    scores = hierarchy_scores(routed, X, tokens=tokens, random_state=0)
    direct = feature_splitting(routed, X, tokens, random_state=0)
    assert scores["feature_splitting"] == direct["mean_num_split_features"] >= 1
