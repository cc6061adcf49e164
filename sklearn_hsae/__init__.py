"""Hierarchical sparse autoencoders for language-model activations, the scikit-learn way."""

from ._baselines import SparseAutoencoder
from ._estimator import HierarchicalCodes, HierarchicalSparseAutoencoder, posthoc_baseline

__version__ = "0.1.0.dev0"

__all__ = [
    "HierarchicalCodes",
    "HierarchicalSparseAutoencoder",
    "SparseAutoencoder",
    "__version__",
    "posthoc_baseline",
]
