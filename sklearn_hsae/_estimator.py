"""Public estimators: parameters, fitted attributes, and how codes become columns."""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseAutoencoder
from ._config import RoutedConfig
from ._models import RoutedSAE
from ._sparse import codes_to_csr

_DEAD_TOKENS = 10_000_000  # Gao et al.: dead after 10M tokens without firing


class HierarchicalCodes(NamedTuple):
    """Sparse codes of a hierarchical SAE, one CSR matrix per level."""

    parent: sp.csr_matrix
    """(n_samples, n_parents) parent codes."""
    child: sp.csr_matrix
    """(n_samples, n_parents * n_children) child codes; column ``p * n_children + c``."""
    levels: list
    """Every level's CSR, coarsest first (``[parent, child]`` for two levels)."""


class HierarchicalSparseAutoencoder(BaseSparseAutoencoder):
    """Hierarchical sparse autoencoder: TopK parents, each routing to its own children.

    ``architecture="routed"`` is the H-SAE of Muchane et al. (2025): a TopK SAE picks k
    parents per sample; every active parent p projects the input into its own
    ``subspace_dim``-dimensional subspace, where a small SAE over ``n_children`` atoms
    keeps exactly its strongest child. Children are computed only for active parents, so
    the dictionary is ``1 + n_children`` times wider than the parent layer at little
    more than the parent layer's cost. The reconstruction adds parents and children::

        x_hat = intercept_ + codes.parent @ parent_components_ + codes.child @ child_components_

    Parameters
    ----------
    n_parents : int, default=1024
        Width of the parent dictionary.
    n_children : int, default=16
        Children per parent.
    subspace_dim : int, default=4
        Dimension of each parent's private subspace in which its children live.
    k : int, default=32
        Active parents per sample; each active parent adds at most one active child.
    architecture : {"routed"}, default="routed"
        The hierarchical model to train.
    max_iter : int, default=10
        Epochs over the data in ``fit``.
    batch_size : int, default=1024
        Rows per optimiser step, and per block in ``transform``.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate (linear warm-up, cosine decay to a tenth in ``fit``).
        ``"auto"`` is ``2e-4 / sqrt(n_parents / 2**14)``, the width scaling law of Gao
        et al. (2024) that sparsify also uses.
    beta : float, default=0.1
        Weight of the parents-only reconstruction error (paper 1).
    aux_coef : float, default=1/32
        Weight of the AuxK loss that revives dead parents (Gao et al.); 0 disables it.
    l1_coef : float, default=0.0
        L1 penalty on all parent and active-expert child pre-activations (paper 1
        uses 1e-3; it did not help on our synthetic benchmark, see the user guide).
    ortho_coef : float, default=0.0
        Encoder/decoder bi-orthogonality penalty (paper 1 uses 0.1).
    normalize : {"global", "unit"} or None, default="global"
        Input scaling: ``"global"`` learns one factor so the mean squared row norm is
        ``n_features`` (paper 2); ``"unit"`` scales every row to unit norm and fixes the
        decoder bias at zero (paper 1); None leaves the data as it is. Codes and
        reconstructions are always reported in the original units.
    device : str or torch.device, default="auto"
        Where to train and encode; ``"auto"`` uses CUDA when available.
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype of the torch core.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights and the batch order. On CPU, equal seeds and data give
        bitwise-identical fits.
    verbose : int, default=0
        Show a progress bar with the running loss and FVU.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution instead of a new initialisation.

    Attributes
    ----------
    parent_components_ : ndarray of shape (n_parents, n_features)
        Unit-norm parent decoder directions.
    child_components_ : ndarray of shape (n_parents * n_children, n_features)
        Unit-norm decoder direction of every child in input space.
    child_parent_ : ndarray of shape (n_parents * n_children,)
        Parent index of every child.
    intercept_ : ndarray of shape (n_features,)
        Decoder bias in input units.
    scale_ : float
        Input scaling factor learned by ``normalize="global"`` (1.0 otherwise).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string feature names.
    n_iter_ : int
        Epochs run by ``fit`` (or ``partial_fit`` calls made).
    n_steps_ : int
        Optimiser steps taken so far.
    loss_curve_ : list of float
        Mean training loss of every epoch (or ``partial_fit`` call).

    See Also
    --------
    SparseAutoencoder : Flat TopK / BatchTopK / Matryoshka baselines.

    References
    ----------
    M. Muchane, S. Richardson, K. Park, V. Veitch. "Incorporating Hierarchical
    Semantics in Sparse Autoencoder Architectures", arXiv:2506.01197, 2025.

    Examples
    --------
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> X, *_ = make_hierarchical_activations(n_samples=500, random_state=0)
    >>> hsae = HierarchicalSparseAutoencoder(
    ...     n_parents=24, n_children=4, subspace_dim=3, k=3, max_iter=2, random_state=0
    ... ).fit(X)
    >>> codes = hsae.encode(X)
    >>> codes.parent.shape, codes.child.shape
    ((500, 24), (500, 96))
    >>> hsae.transform(X).shape
    (500, 120)
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        "n_parents": [Interval(Integral, 1, None, closed="left")],
        "n_children": [Interval(Integral, 1, None, closed="left")],
        "subspace_dim": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "architecture": [StrOptions({"routed"})],
        "beta": [Interval(Real, 0, None, closed="left")],
        "l1_coef": [Interval(Real, 0, None, closed="left")],
        "ortho_coef": [Interval(Real, 0, None, closed="left")],
    }

    _model_class = RoutedSAE

    def __init__(
        self,
        n_parents=1024,
        *,
        n_children=16,
        subspace_dim=4,
        k=32,
        architecture="routed",
        max_iter=10,
        batch_size=1024,
        learning_rate="auto",
        beta=0.1,
        aux_coef=1 / 32,
        l1_coef=0.0,
        ortho_coef=0.0,
        normalize="global",
        device="auto",
        dtype="float32",
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.n_parents = n_parents
        self.n_children = n_children
        self.subspace_dim = subspace_dim
        self.k = k
        self.architecture = architecture
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.beta = beta
        self.aux_coef = aux_coef
        self.l1_coef = l1_coef
        self.ortho_coef = ortho_coef
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------- model bridge
    def _check_sizes(self, n_features: int) -> None:
        if self.k > self.n_parents:
            raise ValueError(
                f"k={self.k} active parents cannot exceed n_parents={self.n_parents}."
            )

    def _topk_width(self) -> int:
        return self.n_parents

    def _model_config(self, n_features: int, n_samples: int) -> RoutedConfig:
        return RoutedConfig(
            n_features=n_features,
            n_parents=self.n_parents,
            n_children=self.n_children,
            subspace_dim=self.subspace_dim,
            k=self.k,
            beta=self.beta,
            aux_coef=self.aux_coef,
            aux_k=min(max(1, n_features // 2), self.n_parents),
            dead_tokens=min(_DEAD_TOKENS, max(n_samples, self.batch_size)),
            l1_coef=self.l1_coef,
            ortho_coef=self.ortho_coef,
            fixed_decoder_bias=self.normalize == "unit",
        )

    def _export_fitted(self, model: RoutedSAE) -> None:
        state = self._model_state
        self.parent_components_ = state["W_dec"].copy()
        directions, _ = model.child_directions()
        self.child_components_ = directions.cpu().numpy()
        self.child_parent_ = np.repeat(np.arange(self.n_parents), self.n_children)
        self.intercept_ = self._public_intercept(state["b_dec"])

    def _integer_ranges(self) -> dict:
        return {"child_parent_": (0, self.n_parents)}

    def _level_widths(self) -> tuple[int, int]:
        return self.n_parents, self.n_parents * self.n_children

    def _components_stack(self) -> np.ndarray:
        return np.vstack([self.parent_components_, self.child_components_])

    def _encode_context(self, model: RoutedSAE):
        return model.child_norms()  # (n_parents * n_children,)

    def _block_levels(self, codes, row_scale, dtype, child_norms) -> list:
        P, C = self.n_parents, self.n_children
        parent = codes_to_csr(codes.parent_values, codes.parent_indices, P, dtype, row_scale)
        # Child codes multiply unit directions: fold in the norm of D_child[c] @ W_up.
        values = codes.child_values * child_norms[codes.child_indices]
        child = codes_to_csr(values, codes.child_indices, P * C, dtype, row_scale)
        return [parent, child]

    # --------------------------------------------------------- public API
    def encode(self, X) -> HierarchicalCodes:
        """Parent and child codes of X as separate CSR matrices.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations.

        Returns
        -------
        codes : HierarchicalCodes
            ``codes.parent`` (n_samples, n_parents), ``codes.child`` (n_samples,
            n_parents * n_children) and ``codes.levels`` (both, coarsest first).
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        levels = self._encode_levels(X)
        return HierarchicalCodes(levels[0], levels[1], levels)

    def _code_names(self, default):
        prefix = type(self).__name__.lower()
        names = [f"{prefix}_parent{p}" for p in range(self.n_parents)]
        names += [
            f"{prefix}_child{p}.{c}" for p in range(self.n_parents) for c in range(self.n_children)
        ]
        return np.asarray(names, dtype=object)
