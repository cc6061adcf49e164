"""Test doubles: an "estimator" whose codes are X's own columns, and token activations."""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp


class PlantedHierarchy:
    """Stands in for a fitted estimator whose codes we choose: level i is a block of X's columns.

    ``widths`` are the level widths; X has ``sum(widths)`` columns, and the codes of a row
    are its own (non-negative) entries, so any code pattern can be planted exactly and
    ``inverse_transform`` is the identity. With two levels, ``child_parent_`` is set; with
    more, ``parent_index_by_level_`` (one array per level below the first).
    """

    def __init__(self, widths, parents=None):
        self.widths = list(widths)
        self.n_features_in_ = sum(self.widths)
        if parents is not None and len(self.widths) == 2:
            self.child_parent_ = np.asarray(parents[0])
        elif parents is not None:
            self.parent_index_by_level_ = [np.asarray(p) for p in parents]

    def encode(self, X):
        X = sp.csr_matrix(np.maximum(np.asarray(X, dtype=np.float64), 0.0))
        edges = np.cumsum([0, *self.widths])
        return SimpleNamespace(levels=[X[:, a:b] for a, b in zip(edges[:-1], edges[1:])])

    def transform(self, X):
        return sp.hstack(self.encode(X).levels, format="csr")

    def inverse_transform(self, Z):
        return Z.toarray() if sp.issparse(Z) else np.asarray(Z)


@dataclass(frozen=True)
class Activations:
    """What activation extraction returns: one row per token."""

    X: np.ndarray
    tokens: list
    doc_index: np.ndarray
    position: np.ndarray
