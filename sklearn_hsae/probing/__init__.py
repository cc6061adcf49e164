"""Sparse probing in the SAEBench protocol, as scikit-learn pieces.

SAEBench (Karvonen et al. 2025) asks how well a handful of latents predict a concept: on
the training split, rank the latents by ``|mean(positive) - mean(negative)|``, keep the
top k, fit a logistic regression on those k columns alone, and report test accuracy next
to a probe on the model's raw activations. :class:`SparseProbeSelector` is the ranking
step as a scikit-learn feature selector, :func:`make_sparse_probe` the whole probe as a
:class:`~sklearn.pipeline.Pipeline` (so ``GridSearchCV`` can tune k), and
:func:`sparse_probe_scores` runs the protocol for an estimator of the package.

SAEBench probes one binary task per class and mean-pools the codes of every text first;
pool rows yourself when your labels belong to documents rather than tokens.
"""

from ._scores import SparseProbeScores, sparse_probe_scores
from ._selector import SparseProbeSelector, make_sparse_probe

__all__ = ["SparseProbeScores", "SparseProbeSelector", "make_sparse_probe", "sparse_probe_scores"]
