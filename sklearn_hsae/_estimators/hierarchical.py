"""HierarchicalSparseAutoencoder: its parameters, its architectures, its extra attributes.

An architecture is a config class (``_config.py``) and a model class (``_models``),
registered in ``ARCHITECTURES``; everything else is generic (``base.py``).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions

from .._config import NestedConfig, RoutedConfig, TreeConfig
from .._models import NestedSAE, RoutedSAE, TreeSAE
from .base import BaseSparseAutoencoder

ARCHITECTURES = {"routed": (RoutedConfig, RoutedSAE), "tree": (TreeConfig, TreeSAE),
                 "nested": (NestedConfig, NestedSAE)}
"""``architecture`` -> (config class, model class)."""
_OWN_DERIVED = ("parent_components_", "child_components_", "child_parent_")


class HierarchicalCodes(NamedTuple):
    """Sparse codes of a hierarchical SAE, one CSR matrix per level.

    ``levels`` is the primary form and holds every level of any depth; ``parent`` and
    ``child`` are shorthands for ``levels[0]`` and ``levels[1]`` (for a tree of three or
    more levels, the finer levels are only in ``levels``).
    """

    parent: sp.csr_matrix
    """``levels[0]``: (n_samples, n_parents) codes of the first level."""
    child: sp.csr_matrix
    """``levels[1]``: codes of the second level (routed: column ``p * n_children + c``
    is child c of parent p)."""
    levels: list
    """Every level's CSR, coarsest first."""


class HierarchicalSparseAutoencoder(BaseSparseAutoencoder):
    """Hierarchical sparse autoencoder: routed (H-SAE), tree (HSAE) or nested (Tree SAE).

    ``architecture="routed"`` is the H-SAE of Muchane et al. (2025): a TopK SAE picks k
    parents per sample; every active parent p projects the input into its own
    ``subspace_dim``-dimensional subspace, where a small SAE over ``n_children`` atoms
    keeps exactly its strongest child. Children are computed only for active parents, so
    the dictionary is ``1 + n_children`` times wider than the parent layer at little
    more than the parent layer's cost. The reconstruction adds parents and children::

        x_hat = intercept_ + codes.parent @ parent_components_ + codes.child @ child_components_

    ``architecture="tree"`` is the HSAE of Luo et al. (2026): ``n_levels`` full SAEs of
    widths ``n_parents * n_children ** l``, each reconstructing X on its own, tied parent
    to children by a structural loss (weight ``rho``), random feature perturbation (rate
    ``perturb_rate``) and re-parenting by encoder similarity every ``reparent_every``
    steps. ``inverse_transform`` and ``score`` use the finest level; every level's
    reconstruction is ``codes.levels[l] @ components_by_level_[l] + intercept_by_level_[l]``.
    With ``rho=0`` and ``perturb_rate=0`` the levels train independently and the tree is
    assigned after training: the post-hoc baseline of paper 2 (:func:`posthoc_baseline`).

    ``architecture="nested"`` is the Tree SAE of Cao et al. (2026): one TopK dictionary in
    ``n_levels`` levels of widths ``n_parents * n_children ** l``, where every feature of
    level l >= 1 has a parent in level l - 1 (or the always-active root, parent -1),
    ``n_children`` per parent at the start. Level l takes its top
    ``k`` only among the features whose parent fired in that row, so a child never fires
    without its parent; the levels add up and every prefix reconstructs X on its own
    (the loss sums their errors, as Matryoshka)::

        x_hat_l = intercept_ + sum_{t <= l} codes.levels[t] @ components_by_level_[t]

    During the first half of ``fit`` (paper 3's schedule, as fractions of the run) dead
    children move, on a growing interval, to the parents with the most loss per child;
    then the dead ones join the root and the tree stays fixed. ``inverse_transform(level=l)``
    is that prefix; ``score`` uses all levels.

    ===============  ===================  ======================  =====================
    architecture     levels               a child fires           reconstruction
    ===============  ===================  ======================  =====================
    ``"routed"``     exactly 2            only with its parent    parents + children
                                          (one per parent)
    ``"tree"``       ``n_levels``         freely (tied by loss)   each level alone
    ``"nested"``     ``n_levels``         only with its parent    levels 0..l add up
    ===============  ===================  ======================  =====================

    Parameters
    ----------
    n_parents : int, default=1024
        Width of the parent dictionary.
    n_children : int, default=16
        Children per parent (nested: at the start; dead children move between parents).
    subspace_dim : int, default=4
        Dimension of each parent's private subspace in which its children live.
    k : int, default=32
        What ``k`` counts depends on the architecture. Routed: active parents per row;
        each active parent adds at most one active child, so the L0 is k parents plus
        up to k children (up to 2k atoms). Tree: active features per row in *every*
        level (TopK), or the L0 target of every level (``sparsity="l0"``), so a row
        has up to ``k * n_levels`` nonzero codes in ``transform``, k in each level's
        own reconstruction. Nested: at most k features per row in every level, chosen
        among those whose parent fired, so the L0 is at most ``k * n_levels`` and the
        reconstruction of level l uses at most ``k * (l + 1)`` atoms (a level may use
        fewer than k when few of its features have an active parent). The measured L0
        of every level is ``l0_`` after fitting.
    architecture : {"routed", "tree", "nested"}, default="routed"
        The hierarchical model to train.
    n_levels : int, default=2
        Levels of the tree and nested architectures (the routed one has exactly two).
    sparsity : {"topk", "l0"}, default="topk"
        Tree only: TopK per level, or JumpReLU with an L0 penalty steered to ``k`` per
        level by paper 2's controller. The nested architecture needs ``"topk"``.
    rho : float, default=0.01
        Tree only: weight of the structural loss ``sum_p ||f_p - sum_{c in C(p)} f_c||^2``.
    perturb_rate : float, default=0.05
        Tree only: probability that a parent's output is replaced by its children's sum
        in its level's reconstruction loss.
    reparent_every : int or "auto", default="auto"
        Tree only: steps between re-assignments of children to parents. ``"auto"``
        re-parents 20 times per ``fit`` (every ``total_steps / 20`` steps, paper 2's
        ratio: every 5,000 of ~98k steps) and every 5,000 steps in ``partial_fit``,
        whose length is unknown.
    unassigned_fraction : float, default=0.2
        Tree only: fraction of least-similar children left without a parent.
    max_iter : int, default=10
        Epochs over the data in ``fit``.
    batch_size : int, default=1024
        Rows per optimiser step, and per block in ``transform``.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate (linear warm-up, cosine decay to a tenth in ``fit``).
        ``"auto"`` gives every dictionary the rate ``min(5e-3, 8e-4 / sqrt(width /
        2**14))`` of its own width: the width scaling law of Gao et al. (2024) at four
        times their constant, which suits runs of thousands of steps (see the user
        guide's "Learning rate"). Routed: one rate, of ``n_parents`` (the TopK over
        parents; each active parent's children are a top-1 in its own subspace). Tree
        and nested: one rate per level, of that level's width, so each level trains
        at the rate a flat SAE of its width gets. A number sets every rate.
    beta : float, default=0.1
        Routed only: weight of the parents-only reconstruction error (paper 1).
    aux_coef : float, default=1/32
        Weight of the AuxK loss that revives dead parents (Gao et al.); 0 disables it.
        Tree and nested: every level has its own; nested: a dead feature may only
        explain rows where its parent fires (paper 3, Eq. 8).
    l1_coef : float, default=0.0
        Routed only: L1 penalty on all parent and active-expert child pre-activations
        (paper 1 uses 1e-3; on the generator it helped tree recovery a little, on
        SmolLM2 it did not help explained variance: see the user guide's "Choosing the
        sizes").
    ortho_coef : float, default=0.0
        Routed only: encoder/decoder bi-orthogonality penalty (paper 1 uses 0.1; no
        effect on tree recovery on the generator that four seeds can show).
    normalize : {"global", "unit"} or None, default="global"
        Input scaling: ``"global"`` learns one factor so the mean squared row norm is
        ``n_features`` (paper 2); ``"unit"`` scales every row to unit norm and fixes the
        decoder bias at zero (paper 1); None leaves the data as it is. Codes and
        reconstructions are always reported in the original units.
    device : str or torch.device, default="auto"
        Where to train and encode: ``"auto"`` (CUDA when available), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``. Inputs may be numpy
        arrays, memmaps or torch tensors on any device (float16 / bfloat16 tensors are
        read as float32); outputs are always numpy / scipy.
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype of the torch core.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights and the batch order. On CPU, equal seeds and data give
        bitwise-identical fits.
    verbose : int, default=0
        Show a progress bar with the running loss and FVU.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution instead of a new initialisation.
    checkpoint_dir : str, path or None, default=None
        Where ``fit`` keeps a checkpoint (model, optimizer, schedule, data order),
        written atomically at the end of every epoch, every ``checkpoint_every`` steps
        and on Ctrl-C. A ``fit`` with the same parameters and data finds it and
        resumes; on CPU the result is bitwise identical to an uninterrupted fit.
    checkpoint_every : int or None, default=None
        Also checkpoint every this many optimiser steps.
    compile : {"auto", True, False}, default="auto"
        Run the routed child path (the per-parent down and up projections, the per-row
        sums and their weight gradients) through compiled kernels that read each input
        row in place instead of copying it once per active parent, and every
        architecture's sparse encoder and decoder gradients on CPU. On CPU these are C
        loops built once per machine with the system C compiler (~0.3 s, cached
        under ``SKLEARN_HSAE_CACHE``, default ``~/.cache/sklearn_hsae``); on CUDA,
        ``torch.compile`` (Triton) kernels. ``"auto"`` uses them on CPU whenever a
        compiler is present and on CUDA for large steps (``batch_size * k *
        subspace_dim * n_features`` of at least 2.5e8); ``True`` always tries, ``False``
        never. A failed build warns once and the eager kernels take over. CPU results
        are deterministic for any thread count (bitwise resume holds) and agree with
        eager ones to float rounding.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_out, n_features)
        Unit-norm decoder direction of every atom of every level, rows in the order of
        ``transform``'s columns (as scikit-learn's decompositions).
    components_by_level_ : list of ndarray
        Every level's rows of ``components_`` (views), coarsest first.
    parent_components_ : ndarray of shape (n_parents, n_features)
        ``components_by_level_[0]``.
    child_components_ : ndarray of shape (n_parents * n_children, n_features)
        ``components_by_level_[1]``: every child's direction in input space.
    child_parent_ : ndarray of shape (n_parents * n_children,)
        ``parent_index_by_level_[1]``: parent of every child; -1 for children the tree
        left unassigned (nested: children of the always-active root).
    parent_index_by_level_ : list of ndarray
        Parent (in the level above) of every feature of every level; -1 = none (all of
        level 0).
    intercept_ : ndarray of shape (n_features,)
        Decoder bias in input units of the model's reconstruction (tree: the finest
        level's).
    intercept_by_level_ : list of ndarray
        Every level's decoder bias in input units (routed and nested: one bias, repeated).
    l0_ : list of float
        Measured mean nonzero codes per row of every level over the last epoch of
        ``fit`` (or the last ``partial_fit`` call).
    scale_ : float
        Input scaling factor learned by ``normalize="global"`` (1.0 otherwise).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
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

    Y. Luo, Y. Zhan, Y. Jiang, et al. "From Atoms to Trees: Building a Structured Feature
    Forest with Hierarchical Sparse Autoencoders", arXiv:2602.11881, 2026.

    T. M. Cao, H. X. Nhat, R. Alharbi, P. L. Nguyen, M. T. Thai. "Tree SAE: Learning
    Hierarchical Feature Structures in Sparse Autoencoders", arXiv:2605.07922, 2026.

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

    The nested architecture has the same fitted attributes and codes; its children fire
    only where their parent does:

    >>> nested = HierarchicalSparseAutoencoder(
    ...     architecture="nested", n_parents=24, n_children=4, k=3, max_iter=2, random_state=0
    ... ).fit(X)
    >>> codes = nested.encode(X)
    >>> child, parent = codes.child.toarray() != 0, codes.parent.toarray() != 0
    >>> under = nested.child_parent_ >= 0
    >>> bool((child[:, under] <= parent[:, nested.child_parent_[under]]).all())
    True
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        "n_parents": [Interval(Integral, 1, None, closed="left")],
        "n_children": [Interval(Integral, 1, None, closed="left")],
        "subspace_dim": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "architecture": [StrOptions(set(ARCHITECTURES))],
        "n_levels": [Interval(Integral, 1, None, closed="left")],
        "sparsity": [StrOptions({"topk", "l0"})],
        "rho": [Interval(Real, 0, None, closed="left")],
        "perturb_rate": [Interval(Real, 0, 1, closed="both")],
        "reparent_every": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "unassigned_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "l1_coef": [Interval(Real, 0, None, closed="left")],
        "ortho_coef": [Interval(Real, 0, None, closed="left")],
        "compile": ["boolean", StrOptions({"auto"})],
    }

    def __init__(
        self,
        n_parents=1024,
        *,
        n_children=16,
        subspace_dim=4,
        k=32,
        architecture="routed",
        n_levels=2,
        sparsity="topk",
        rho=0.01,
        perturb_rate=0.05,
        reparent_every="auto",
        unassigned_fraction=0.2,
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
        checkpoint_dir=None,
        checkpoint_every=None,
        compile="auto",
    ):
        self.n_parents = n_parents
        self.n_children = n_children
        self.subspace_dim = subspace_dim
        self.k = k
        self.architecture = architecture
        self.n_levels = n_levels
        self.sparsity = sparsity
        self.rho = rho
        self.perturb_rate = perturb_rate
        self.reparent_every = reparent_every
        self.unassigned_fraction = unassigned_fraction
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
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.compile = compile

    def _architecture(self):
        return ARCHITECTURES[self.architecture]

    _derived_attributes = (*BaseSparseAutoencoder._derived_attributes, *_OWN_DERIVED)

    def _export_fitted(self, model, previous=None) -> None:
        super()._export_fitted(model, previous)
        self.parent_components_, self.child_components_ = self.components_by_level_[:2]
        self.child_parent_ = self.parent_index_by_level_[1]

    def _integer_ranges(self) -> dict:
        return {**super()._integer_ranges(), "child_parent_": (-1, self.n_parents)}

    def _codes(self, levels: list) -> HierarchicalCodes:
        return HierarchicalCodes(levels[0], levels[1], levels)


def posthoc_baseline(estimator: HierarchicalSparseAutoencoder) -> HierarchicalSparseAutoencoder:
    """The post-hoc tree baseline of paper 2 for a tree estimator, unfitted.

    Independently trained levels of the same widths, sparsity and training schedule,
    with the tree assigned after training by the same encoder-similarity rule: a clone
    with ``rho=0`` and ``perturb_rate=0`` (each level's gradient is clipped on its own,
    so nothing couples the levels).

    Parameters
    ----------
    estimator : HierarchicalSparseAutoencoder
        A tree estimator (fitted or not); only its parameters are used.

    Returns
    -------
    baseline : HierarchicalSparseAutoencoder
        An unfitted clone configured as the post-hoc baseline.

    Examples
    --------
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder, posthoc_baseline
    >>> hsae = HierarchicalSparseAutoencoder(architecture="tree", n_parents=8, n_children=2)
    >>> base = posthoc_baseline(hsae)
    >>> base.rho, base.perturb_rate, base.n_parents
    (0.0, 0.0, 8)
    """
    if not isinstance(estimator, HierarchicalSparseAutoencoder) or estimator.architecture != "tree":
        raise ValueError(
            "posthoc_baseline needs a HierarchicalSparseAutoencoder with architecture='tree', "
            f"got {estimator!r}."
        )
    return clone(estimator).set_params(rho=0.0, perturb_rate=0.0)
