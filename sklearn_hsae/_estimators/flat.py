"""SparseAutoencoder: the flat TopK / BatchTopK / Matryoshka baselines, same contract."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions

from .._config import FlatConfig, matryoshka_widths
from .._models import FlatSAE
from .base import BaseSparseAutoencoder, SparseCodes


class SparseAutoencoder(BaseSparseAutoencoder):
    """Flat sparse autoencoder: TopK, BatchTopK or Matryoshka, for fair baselines.

    The same training loop, input scaling, AuxK and decoder constraints as
    :class:`HierarchicalSparseAutoencoder`, without the hierarchy, so comparisons
    between the two measure the architecture and nothing else.

    Parameters
    ----------
    n_components : int, default=4096
        Dictionary width.
    k : int, default=32
        The L0: active latents per row (``"topk"``) or on average per row
        (``"batchtopk"``). The measured L0 is ``l0_`` after fitting.
    activation : {"topk", "batchtopk"}, default="topk"
        ``"topk"`` keeps the k largest ReLU pre-activations of every row (Gao et al.
        2024). ``"batchtopk"`` keeps the ``batch_size * k`` largest of each training
        batch and, at inference, every activation above ``threshold_``, an average of
        the smallest value the batch top-k kept (Bussmann et al. 2024).
    matryoshka_prefixes : list of int, list of float or None, default=None
        Nested dictionary widths below ``n_components`` (ints; a last entry equal to
        ``n_components``, SAELens' ``matryoshka_widths`` form, is accepted), or
        fractions of it (floats in (0, 1), rounded); the loss adds the reconstruction
        error of every prefix ``components_[:m]`` to the full one (Bussmann et al. 2025).
    max_iter : int, default=10
        Epochs over the data in ``fit``.
    batch_size : int, default=1024
        Rows per optimiser step, and per block in ``transform``.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; ``"auto"`` is
        ``min(5e-3, 8e-4 / sqrt(n_components / 2**14))``, the rule every level of a
        hierarchical SAE follows (of its own width).
    aux_coef : float, default=1/32
        Weight of the AuxK loss that revives dead latents; 0 disables it.
    normalize : {"global", "unit"} or None, default="global"
        Input scaling, as in :class:`HierarchicalSparseAutoencoder`.
    device : str or torch.device, default="auto"
        Where to train and encode, as in :class:`HierarchicalSparseAutoencoder` (whose
        docstring also gives the accepted input types).
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype of the torch core.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights and the batch order.
    verbose : int, default=0
        Show a progress bar with the running loss and FVU.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution instead of a new initialisation.
    checkpoint_dir : str, path or None, default=None
        Where ``fit`` keeps a checkpoint for exact resumption, as in
        :class:`HierarchicalSparseAutoencoder`.
    checkpoint_every : int or None, default=None
        Also checkpoint every this many optimiser steps.
    compile : {"auto", True, False}, default="auto"
        On CPU, compute the encoder's and the decoder's sparse gradients (only the
        selected latents' rows) with C loops built once per machine with the system C
        compiler (~0.3 s, cached under ``SKLEARN_HSAE_CACHE``, default
        ``~/.cache/sklearn_hsae``), as :class:`HierarchicalSparseAutoencoder` does.
        ``"auto"`` uses them whenever a compiler is present, ``True`` always tries,
        ``False`` never; a failed build warns once and the torch kernels take over.
        Results are deterministic for any thread count and agree with the torch
        kernels to float rounding. No effect on CUDA.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Unit-norm decoder directions.
    components_by_level_ : list of ndarray
        ``[components_]``: the one level, for code that handles any estimator.
    parent_index_by_level_ : list of ndarray
        ``[-1, -1, ...]``: a flat dictionary has no tree.
    intercept_ : ndarray of shape (n_features,)
        Decoder bias in input units.
    intercept_by_level_ : list of ndarray
        ``[intercept_]``.
    l0_ : list of float
        ``[mean nonzero codes per row]`` over the last epoch of ``fit`` (or the last
        ``partial_fit`` call).
    threshold_ : float
        Inference threshold of ``"batchtopk"`` in the scaled units the encoder sees
        (0.0 for ``"topk"``).
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
    HierarchicalSparseAutoencoder : The hierarchical models.

    Examples
    --------
    >>> from sklearn_hsae import SparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> X, *_ = make_hierarchical_activations(n_samples=500, random_state=0)
    >>> sae = SparseAutoencoder(n_components=48, k=6, max_iter=2, random_state=0).fit(X)
    >>> sae.transform(X).shape
    (500, 48)
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"topk", "batchtopk"})],
        "matryoshka_prefixes": ["array-like", None],
        "compile": ["boolean", StrOptions({"auto"})],
    }

    def __init__(
        self,
        n_components=4096,
        *,
        k=32,
        activation="topk",
        matryoshka_prefixes=None,
        max_iter=10,
        batch_size=1024,
        learning_rate="auto",
        aux_coef=1 / 32,
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
        self.n_components = n_components
        self.k = k
        self.activation = activation
        self.matryoshka_prefixes = matryoshka_prefixes
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.aux_coef = aux_coef
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
        return FlatConfig, FlatSAE

    def _prefixes(self) -> tuple[int, ...]:
        """Matryoshka widths as increasing ints ending with ``n_components`` (or empty)."""
        return matryoshka_widths(self.matryoshka_prefixes, self.n_components)

    _derived_attributes = (*BaseSparseAutoencoder._derived_attributes, "threshold_")

    def _export_fitted(self, model, previous=None) -> None:
        super()._export_fitted(model, previous)
        self.threshold_ = float(model.threshold)

    def _codes(self, levels: list) -> SparseCodes:
        return SparseCodes(levels)
