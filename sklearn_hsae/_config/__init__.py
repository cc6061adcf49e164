"""Frozen configurations handed from the estimators to the torch core.

The estimators build these from ``get_params()`` inside ``fit`` with each class's
``from_params``; the models and the training loop take them instead of loose keyword
arguments. Every derived value (``aux_k`` from ``n_features``, the dead-latent window
from the data size, the re-parenting period, the allocation schedule and the warm-up
from the step count, the automatic learning rate from the dictionary width) is decided
here, once, and every size check speaks in its own architecture's terms.

This module imports nothing from the package: it sits below the estimators and beside
the models, which read these dataclasses but never import them.
"""
from .common import TrainConfig, auto_learning_rate, aux_k, dead_tokens
from .flat import FlatConfig, matryoshka_widths
from .levels import NestedConfig, TreeConfig, level_widths
from .routed import RoutedConfig

MODEL_CONFIGS: dict[str, type] = {
    cls.__name__: cls for cls in (RoutedConfig, FlatConfig, TreeConfig, NestedConfig)
}
"""Model configurations ``sklearn_hsae.io`` may rebuild from a file, by class name.

A file names its config type; only these are ever constructed. A new architecture adds
its config here (fields typed with int, float, bool, str, tuples of those or ``X | None``).
"""

__all__ = [
    "MODEL_CONFIGS", "FlatConfig", "NestedConfig", "RoutedConfig", "TrainConfig", "TreeConfig",
    "auto_learning_rate", "aux_k", "dead_tokens", "level_widths", "matryoshka_widths",
]
