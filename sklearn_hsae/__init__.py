"""Hierarchical sparse autoencoders for language-model activations, the scikit-learn way."""

from ._estimators import (
    HierarchicalCodes,
    HierarchicalSparseAutoencoder,
    SparseAutoencoder,
    SparseCodes,
    posthoc_baseline,
)
from ._training import DivergenceError

__version__ = "0.1.0.dev0"

__all__ = [
    "DivergenceError",
    "HierarchicalCodes",
    "HierarchicalSparseAutoencoder",
    "SparseAutoencoder",
    "SparseCodes",
    "__version__",
    "posthoc_baseline",
]
