"""Metrics for sparse dictionaries, their hierarchies, and the language model they explain.

Reconstruction and sparsity (:func:`fvu`, :func:`l0`, :func:`feature_density`,
:func:`dead_fraction`, :func:`dense_fraction`, :func:`evaluate`) work on the codes of any
estimator of the package, one CSR matrix per level (:func:`code_levels`);
:func:`tree_recovery` compares a learned two-level dictionary with a known tree;
:func:`hierarchy_consistency` measures how consistently children fire with their parents.
Tree SAE's metrics (:func:`hierarchy_mcs`, :func:`hierarchy_tree_structure`,
:func:`sibling_cooccurrence`, :func:`composition`, :func:`feature_splitting`) work from
codes, decoder rows and parent links, so they run on every architecture; a flat dictionary
gets a tree from :func:`posthoc_tree`, and :func:`hierarchy_scores` returns them all.
:func:`ce_loss_recovered` and :func:`first_letter_absorption` run on a real language model
and its activations (the ``[llm]`` extra; transformers loads only when they are called).
"""

from .._lm.absorption import first_letter_absorption
from .._lm.ce_loss import ce_loss_recovered
from ._hierarchy import hierarchy_consistency, tree_recovery
from ._levels import code_levels, level_names
from ._posthoc import posthoc_tree
from ._probe_hierarchy import hierarchy_mcs, hierarchy_tree_structure
from ._reconstruction import dead_fraction, dense_fraction, evaluate, feature_density, fvu, l0
from ._scores import hierarchy_scores
from ._splitting import feature_splitting
from ._structure import composition, sibling_cooccurrence

__all__ = [
    "ce_loss_recovered",
    "code_levels",
    "composition",
    "dead_fraction",
    "dense_fraction",
    "evaluate",
    "feature_density",
    "feature_splitting",
    "first_letter_absorption",
    "fvu",
    "hierarchy_consistency",
    "hierarchy_mcs",
    "hierarchy_scores",
    "hierarchy_tree_structure",
    "l0",
    "level_names",
    "posthoc_tree",
    "sibling_cooccurrence",
    "tree_recovery",
]
