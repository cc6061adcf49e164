"""Sparse probing: the selector's scores, planted columns, the SAEBench protocol end to end."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from planted import PlantedHierarchy
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.probing import SparseProbeSelector, make_sparse_probe, sparse_probe_scores
from sklearn_hsae.probing._scores import _split


def sparse_codes(n, d, rng, density=0.1):
    """Non-negative, mostly-zero noise shaped like SAE codes."""
    return rng.random((n, d)) * (rng.random((n, d)) < density) * 3.0


@pytest.mark.parametrize("k", [5, 1])
def test_selector_passes_check_estimator(k):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="k=5 is larger than")  # 2-4 column checks
        results = check_estimator(SparseProbeSelector(k=k), on_fail=None)
    bad = [(r["check_name"], r["exception"]) for r in results if r["status"] != "passed"]
    assert not bad
    assert len(results) >= 45


def test_selector_scores_by_hand_dense_and_sparse():
    X = np.array([[0.0, 1.0, 0.2], [0.0, 3.0, 0.0], [2.0, 1.0, 0.1], [4.0, 1.0, 0.0]])
    y = np.array(["no", "no", "yes", "yes"])
    for data in (X, sp.csr_matrix(X), sp.csc_matrix(X)):
        selector = SparseProbeSelector(k=2).fit(data, y)
        np.testing.assert_allclose(selector.scores_, [3.0, 1.0, 0.05])  # |3-0|, |1-2|, |.05-.1|
        np.testing.assert_array_equal(selector.selected_, [0, 1])
        np.testing.assert_array_equal(selector.get_support(), [True, True, False])
        assert list(selector.classes_) == ["no", "yes"]
    # Three classes: the largest one-vs-rest difference of every column.
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 6.0], [0.0, 6.0]])
    selector = SparseProbeSelector(k=1).fit(X, [0, 0, 1, 1, 2, 2])
    # column 0: class 0 mean 1 vs rest 0 -> 1; class 1: 0 vs 0.5; class 2: 0 vs 0.5.
    # column 1: class 2 mean 6 vs rest 0 -> 6; the others: 0 vs 3 -> 3.
    np.testing.assert_allclose(selector.scores_, [1.0, 6.0])
    np.testing.assert_array_equal(selector.selected_, [1])


def test_selector_rejects_what_it_cannot_probe():
    X = np.eye(4)
    with pytest.raises(ValueError, match="needs class labels, got a continuous target"):
        SparseProbeSelector().fit(X, [0.1, 0.7, 0.3, 0.9])
    with pytest.raises(ValueError, match="one class"):
        SparseProbeSelector().fit(X, [1, 1, 1, 1])
    with pytest.warns(UserWarning, match="k=5 is larger than the 4 columns"):
        assert SparseProbeSelector().fit(X, [0, 1, 0, 1]).selected_.shape == (4,)


def test_probe_finds_a_planted_column_and_nothing_in_noise():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    X = sparse_codes(n, 60, rng)
    X[:, 17] = y * rng.uniform(1.0, 2.0, n)  # fires exactly on the positives
    train, test = np.arange(1500), np.arange(1500, n)
    probe = make_sparse_probe(k=1).fit(X[train], y[train])
    np.testing.assert_array_equal(probe[0].selected_, [17])
    assert probe.score(X[test], y[test]) == 1.0
    noise = rng.integers(0, 2, n)  # labels unrelated to X
    probe = make_sparse_probe(k=1).fit(X[train], noise[train])
    assert abs(probe.score(X[test], noise[test]) - 0.5) < 0.06  # 500 rows: chance +- 2.7 sd


def test_grid_search_over_k_prefers_enough_columns():
    rng = np.random.default_rng(1)
    n = 900
    X = sparse_codes(n, 40, rng)
    informative = [5, 9, 12]
    X[:, informative] = rng.random((n, 3)) * 2.0  # dense and spread out
    y = (X[:, informative].sum(axis=1) > 3.0).astype(int)
    search = GridSearchCV(make_sparse_probe(), {"sparseprobeselector__k": [1, 3, 10]}, cv=3)
    search.fit(X, y)
    means = dict(zip([1, 3, 10], search.cv_results_["mean_test_score"]))
    assert means[3] > means[1] + 0.1  # one of three summands cannot decide the sum
    assert means[3] > 0.95
    assert search.best_params_["sparseprobeselector__k"] in (3, 10)
    assert set(search.best_estimator_[0].selected_[:3]) == set(informative)


def test_sparse_probe_scores_on_planted_codes():
    rng = np.random.default_rng(2)
    n, parents, children = 1500, 6, 12
    y = rng.integers(0, 2, n)
    X = sparse_codes(n, parents + children, rng)
    X[:, parents + 7] = y * rng.uniform(1.0, 2.0, n)  # child 7 is the concept
    estimator = PlantedHierarchy([parents, children], [np.repeat(np.arange(parents), 2)])
    scores = sparse_probe_scores(estimator, X, y, ks=(1, 2), codes="levels", random_state=0)
    assert scores.rows == ("activations", "parent", "child")
    assert scores.ks == (1, 2) and scores.accuracy.shape == (3, 3)
    assert (scores.n_train, scores.n_test) == (1200, 300)
    train, test = _split(y, 0.2, None, 0)  # the split sparse_probe_scores made
    majority = np.bincount(y[train]).argmax()
    assert scores.chance == np.mean(y[test] == majority)
    assert scores["child", 1] == 1.0
    np.testing.assert_array_equal(scores.selected["child"][0], [7])
    assert scores["activations", 1] == 1.0  # X holds the same column
    np.testing.assert_array_equal(scores.selected["activations"][0], [parents + 7])
    assert abs(scores["parent", 1] - 0.5) < 0.1 and abs(scores["parent", "all"] - 0.5) < 0.1
    # The other code options pick the matching columns.
    assert sparse_probe_scores(estimator, X, y, ks=(1,), codes="child").rows[1] == "child"
    both = sparse_probe_scores(estimator, X, y, ks=(1,), codes="all", random_state=0)
    np.testing.assert_array_equal(both.selected["codes"][0], [parents + 7])
    assert sparse_probe_scores(estimator, X, y, ks=(1,), codes=-1).rows == ("activations", "child")
    table = pd.DataFrame(scores.to_dict())
    assert list(table.columns) == ["features", "k=1", "k=2", "all"]
    assert table.loc[2, "k=1"] == 1.0
    text = str(scores)
    assert "child" in text and "k=2" in text and "300 rows" in text


def test_grouped_split_keeps_documents_whole():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(50), 20)  # 50 documents of 20 tokens
    y = rng.integers(0, 2, len(groups))
    train, test = _split(y, 0.2, groups, random_state=0)
    assert not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == 10 and len(train) + len(test) == 1000
    with pytest.raises(ValueError, match="groups has 3 entries but y has 1000"):
        _split(y, 0.2, [0, 1, 2], 0)
    doc_label = (groups < 25).astype(int)  # one label per document
    with pytest.raises(ValueError, match="grouped test split holds a single class"):
        _split(doc_label, 1, groups, random_state=0)  # test_size=1: a single document


def test_sparse_probe_scores_rejects_bad_requests():
    X, *_ = make_hierarchical_activations(n_samples=200, n_features=8, n_parents=4, n_children=2,
                                          subspace_dim=2, n_active=1, random_state=0)
    y = np.arange(200) % 2
    sae = SparseAutoencoder(n_components=6, k=2, max_iter=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="codes='child' needs a hierarchical estimator"):
        sparse_probe_scores(sae, X, y, codes="child")
    with pytest.raises(ValueError, match="codes must be 'parent', 'child', 'all', 'levels'"):
        sparse_probe_scores(sae, X, y, codes="leaves")
    with pytest.raises(ValueError, match="codes=3 is out of range for 1 level"):
        sparse_probe_scores(sae, X, y, codes=3)
    with pytest.raises(ValueError, match="X has 200 rows but y has 199 labels"):
        sparse_probe_scores(sae, X, y[:199])
    with pytest.raises(ValueError, match="ks must be a non-empty sequence"):
        sparse_probe_scores(sae, X, y, ks=(0, 2), codes="all")
    scores = sparse_probe_scores(sae, X, y, ks=(1, 50), codes="all", random_state=0)
    assert len(scores.selected["codes"][1]) == 6  # k above the width: every column


@pytest.mark.parametrize("flat", [False, True])
def test_protocol_on_a_fitted_estimator_equals_running_it_by_hand(flat):
    """Encode, split, rank by |mean difference| on the training rows, fit, score: by hand."""
    X, *_, parent_codes, _ = make_hierarchical_activations(
        n_samples=1000, n_features=16, n_parents=6, n_children=3, subspace_dim=2, n_active=2,
        random_state=0, return_codes=True)
    y = (parent_codes[:, 0].toarray().ravel() > 0).astype(int)  # is true parent 0 on?
    if flat:
        estimator, codes, name = SparseAutoencoder(n_components=12, k=3, max_iter=3), "all", "codes"
    else:
        estimator = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                                  max_iter=3)
        codes, name = "parent", "parent"
    estimator.set_params(batch_size=128, random_state=0).fit(X)
    scores = sparse_probe_scores(estimator, X, y, ks=(1, 3), codes=codes, random_state=0)
    Z = estimator.transform(X).toarray()[:, :12 if flat else 6]
    train, test = _split(y, 0.2, None, 0)
    diff = np.abs(Z[train][y[train] == 1].mean(0) - Z[train][y[train] == 0].mean(0))
    for j, k in enumerate((1, 3)):
        top = np.argsort(-diff, kind="stable")[:k]
        np.testing.assert_array_equal(scores.selected[name][j], top)
        lr = LogisticRegression(max_iter=1000, random_state=0).fit(Z[train][:, top], y[train])
        assert scores[name, k] == lr.score(Z[test][:, top], y[test])
    raw = LogisticRegression(max_iter=1000, random_state=0).fit(X[train], y[train])
    assert scores["activations", "all"] == raw.score(X[test], y[test])
    assert scores["activations", "all"] > 0.9  # the concept is linear in X


def test_verbose_draws_a_bar_of_probes_and_quiet_prints_nothing(capfd):
    rng = np.random.default_rng(4)
    X, y = sparse_codes(120, 6, rng), np.arange(120) % 2
    estimator = PlantedHierarchy([2, 4], [np.array([0, 0, 1, 1])])
    sparse_probe_scores(estimator, X, y, ks=(1, 2), codes="levels", random_state=0)
    assert capfd.readouterr().err == ""
    sparse_probe_scores(estimator, X, y, ks=(1, 2), codes="levels", random_state=0, verbose=1)
    err = capfd.readouterr().err
    assert "probes:" in err and "/9 [" in err  # 3 feature sets x (2 top-k probes + all)
    assert "probe/s" in err and re.search(r"\[\d\d:\d\d<", err)  # rate, elapsed<time left
    with pytest.raises(ValueError, match="verbose must be a non-negative int, got -1"):
        sparse_probe_scores(estimator, X, y, verbose=-1)
