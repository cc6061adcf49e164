"""Hierarchical sparse autoencoders for language-model activations, the scikit-learn way."""

from ._baselines import SparseAutoencoder
from ._estimator import HierarchicalCodes, HierarchicalSparseAutoencoder, posthoc_baseline
from ._training import DivergenceError

__version__ = "0.1.0.dev0"

__all__ = [
    "DivergenceError",
    "HierarchicalCodes",
    "HierarchicalSparseAutoencoder",
    "SparseAutoencoder",
    "__version__",
    "posthoc_baseline",
]
