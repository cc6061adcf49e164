"""Torch modules, one architecture a file. Nothing here imports scikit-learn.

Every model offers the same interface to the training loop:
``loss(x) -> LossOutput``, ``before_optimizer_step()``, ``after_optimizer_step()``,
``init_from_data(x)``, and ``forward(x)`` returning a NamedTuple of sparse codes.
"""

from .common import LossOutput
from .flat import FlatCodes, FlatSAE
from .routed import RoutedCodes, RoutedSAE
from .tree import TreeCodes, TreeSAE

__all__ = ["FlatCodes", "FlatSAE", "LossOutput", "RoutedCodes", "RoutedSAE", "TreeCodes", "TreeSAE"]
