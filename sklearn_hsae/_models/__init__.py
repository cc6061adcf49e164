"""Torch modules, one architecture a file. Nothing here imports scikit-learn.

Every model implements :class:`~.common.SAEModel` (the interface the training loop and
the estimators use, and nothing else) and returns one code form, :class:`~.common.Codes`:
per level (values, indices), the reconstruction and the per-level reconstructions.
"""

from .common import Codes, Dictionary, LossOutput, SAEModel
from .flat import FlatSAE
from .nested import NestedSAE
from .routed import RoutedSAE
from .tree import TreeSAE

__all__ = ["Codes", "Dictionary", "FlatSAE", "LossOutput", "NestedSAE", "RoutedSAE", "SAEModel", "TreeSAE"]
