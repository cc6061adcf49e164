"""Metrics for sparse dictionaries, their hierarchies, and the language model they explain.

Reconstruction and sparsity (:func:`fvu`, :func:`l0`, :func:`feature_density`,
:func:`dead_fraction`, :func:`dense_fraction`, :func:`evaluate`) work on the codes of any
estimator of the package, one CSR matrix per level (:func:`code_levels`);
:func:`tree_recovery` compares a learned two-level dictionary with a known tree;
:func:`hierarchy_consistency` measures how consistently children fire with their parents.
:func:`ce_loss_recovered` and :func:`first_letter_absorption` run on a real language model
and its activations (the ``[llm]`` extra; transformers loads only when they are called).
"""

from .._lm.absorption import first_letter_absorption
from .._lm.ce_loss import ce_loss_recovered
from ._hierarchy import hierarchy_consistency, tree_recovery
from ._levels import code_levels, level_names
from ._reconstruction import dead_fraction, dense_fraction, evaluate, feature_density, fvu, l0

__all__ = [
    "ce_loss_recovered",
    "code_levels",
    "dead_fraction",
    "dense_fraction",
    "evaluate",
    "feature_density",
    "first_letter_absorption",
    "fvu",
    "hierarchy_consistency",
    "l0",
    "level_names",
    "tree_recovery",
]
