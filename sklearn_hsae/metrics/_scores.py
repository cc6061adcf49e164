"""Every hierarchy metric of the three papers for any estimator, in one call."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params

from .._config import matryoshka_widths
from ._hierarchy import hierarchy_consistency
from ._levels import _check_codes, code_levels
from ._posthoc import posthoc_tree
from ._probe_hierarchy import _probe_score
from ._splitting import feature_splitting
from ._structure import composition, sibling_cooccurrence
from ._tree import _global_parents, tree_view


def _flat_split(estimator, codes, components, posthoc):
    """Two levels of a flat dictionary and their post-hoc tree (see hierarchy_scores)."""
    n = codes.shape[1]
    prefixes = getattr(estimator, "matryoshka_prefixes", None)
    if prefixes is not None:
        top = np.arange(matryoshka_widths(prefixes, n)[0])  # the first Matryoshka group
    else:
        counts = np.bincount(codes.indices, minlength=n)
        top = np.sort(np.argsort(-counts, kind="stable")[: max(1, n // 4)])
    rest = np.setdiff1d(np.arange(n), top)
    if rest.size == 0:
        raise ValueError(f"A flat dictionary of {n} latents has no latents left for children.")
    levels = [codes[:, top], codes[:, rest]]
    parts = [components[top], components[rest]]
    given = parts if posthoc == "decoder" else levels
    return levels, parts, [np.full(len(top), -1), posthoc_tree(*given, similarity=posthoc)]


def _hierarchy_of(estimator, X, parent_index, posthoc):
    """(levels, components per level, parent index per level, which tree) of an estimator."""
    if not hasattr(estimator, "components_"):
        raise TypeError(f"{type(estimator).__name__} has no components_: the hierarchy metrics "
                        "need a fitted estimator's decoder rows.")
    levels = [_check_codes(level) for level in code_levels(estimator, X)]
    components = list(getattr(estimator, "components_by_level_", [estimator.components_]))
    if len(levels) == 1:
        if parent_index is not None:
            raise ValueError("A flat estimator gets a post-hoc tree here; score a tree of your "
                             "own with the metric functions and a code matrix.")
        return (*_flat_split(estimator, levels[0], components[0], posthoc), "posthoc")
    if parent_index is None:
        return levels, components, list(estimator.parent_index_by_level_), "own"
    parent_index = list(parent_index)
    if len(parent_index) == len(levels) - 1:
        parent_index = [np.full(levels[0].shape[1], -1), *parent_index]
    _global_parents(parent_index, [level.shape[1] for level in levels])  # validates
    return levels, components, parent_index, "given"


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


@validate_params(
    {
        "estimator": [HasMethods(["transform"])],
        "X": ["array-like"],
        "tokens": ["array-like", None],
        "parent_index": [list, tuple, None],
        "posthoc": [StrOptions({"decoder", "coactivation"})],
        "n_parents": [Interval(Integral, 1, None, closed="left"), None],
        "min_child_count": [Interval(Integral, 1, None, closed="left")],
        "top": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def hierarchy_scores(estimator, X, *, tokens=None, parent_index=None, posthoc="decoder",
                     n_parents=None, min_child_count=100, top=5, random_state=None):
    """Every hierarchy metric for any estimator, in one dict.

    The levels, decoder rows and tree come from the estimator: ``encode(X).levels``,
    ``components_by_level_`` and ``parent_index_by_level_`` (routed H-SAE, tree HSAE,
    Tree SAE). A flat dictionary (one level) first gets two levels and a post-hoc tree:
    the parent level is a Matryoshka SAE's first group (``matryoshka_prefixes[0]``
    latents) or, otherwise, the quarter of the latents that fire most often on X (Tree
    SAE's 2-layer split, 6144 of 24576); every other latent joins a parent by
    :func:`posthoc_tree` (``posthoc`` similarity, 20 % left unassigned).

    Parameters
    ----------
    estimator : fitted estimator of sklearn_hsae
        Any estimator of the package.
    X : array-like of shape (n_samples, n_features)
        Evaluation activations (held out from training, ideally).
    tokens : array-like of str of shape (n_samples,) or None, default=None
        Token strings of the rows; without them ``feature_splitting`` is NaN.
    parent_index : list of ndarray or None, default=None
        A tree to score instead of the estimator's own, one array per level as
        ``parent_index_by_level_`` (e.g. a random control); hierarchical estimators only.
    posthoc : {"decoder", "coactivation"}, default="decoder"
        Similarity of the post-hoc tree of a flat estimator.
    n_parents, min_child_count, top, random_state
        Passed to :func:`hierarchy_mcs` and :func:`hierarchy_tree_structure`
        (``random_state`` also to :func:`feature_splitting`).

    Returns
    -------
    scores : dict
        - ``p_parent_given_child``, ``p_child_given_parent``, ``hamming_rate``: paper 2's
          metrics (:func:`hierarchy_consistency`) of every pair of adjacent levels,
          averaged over the pairs of levels.
        - ``sibling_cooccurrence``: :func:`sibling_cooccurrence`.
        - ``composition``: :func:`composition` of all decoder rows.
        - ``hierarchy_mcs``, ``hierarchy_tree_structure``: the ``score`` of
          :func:`hierarchy_mcs` and :func:`hierarchy_tree_structure` (their probes are
          shared).
        - ``feature_splitting``: ``mean_num_split_features`` of :func:`feature_splitting`.
        - ``tree``: ``"own"``, ``"given"`` or ``"posthoc"``; ``n_levels``.

    Examples
    --------
    >>> from sklearn_hsae import SparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.metrics import hierarchy_scores
    >>> X, *_ = make_hierarchical_activations(n_samples=400, n_features=16, n_parents=4,
    ...                                       n_children=2, subspace_dim=2, random_state=0)
    >>> sae = SparseAutoencoder(n_components=12, k=3, max_iter=2, random_state=0).fit(X)
    >>> scores = hierarchy_scores(sae, X, min_child_count=20)
    >>> scores["tree"], scores["n_levels"], 0 <= scores["hierarchy_tree_structure"] <= 1
    ('posthoc', 2, True)
    """
    levels, components, parents, tree = _hierarchy_of(estimator, X, parent_index, posthoc)
    pairs = [hierarchy_consistency(levels[i - 1], levels[i], np.asarray(parents[i]))
             for i in range(1, len(levels))]
    view = tree_view(levels, parent_index=parents, components=components)
    probes = {}  # one probe per child, shared by both pair sources
    probe_scores = {
        source: _probe_score(view, X, source, n_parents=n_parents, dense_fraction=0.5,
                             max_children=5, min_child_count=min_child_count, top=top, C=1.0,
                             random_state=random_state, probes=probes)["score"]
        for source in ("mcs", "tree")
    }
    splitting = float("nan")
    if tokens is not None:
        splitting = feature_splitting(levels, X, tokens, random_state=random_state)[
            "mean_num_split_features"]
    return {
        "p_parent_given_child": _mean([r["p_parent_given_child"] for r in pairs]),
        "p_child_given_parent": _mean([r["p_child_given_parent"] for r in pairs]),
        "hamming_rate": _mean([r["hamming_rate"] for r in pairs]),
        "sibling_cooccurrence": sibling_cooccurrence(levels, parent_index=parents)[
            "sibling_cooccurrence"],
        "composition": composition(components),
        "hierarchy_mcs": probe_scores["mcs"],
        "hierarchy_tree_structure": probe_scores["tree"],
        "feature_splitting": splitting,
        "tree": tree,
        "n_levels": len(levels),
    }
