"""scikit-learn glue: parameters, validation, fit / transform, fitted attributes.

``base.py`` is generic over any model; ``hierarchical.py`` and ``flat.py`` hold the two
public estimators. numpy / scipy in and out, no autograd outside ``fit``.
"""

from .base import BaseSparseAutoencoder, SparseCodes
from .flat import SparseAutoencoder
from .hierarchical import HierarchicalCodes, HierarchicalSparseAutoencoder, posthoc_baseline

__all__ = [
    "BaseSparseAutoencoder",
    "HierarchicalCodes",
    "HierarchicalSparseAutoencoder",
    "SparseAutoencoder",
    "SparseCodes",
    "posthoc_baseline",
]
