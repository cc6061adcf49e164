"""scikit-learn glue shared by every estimator of the package.

Subclasses say which torch model to build and how its codes become columns; this base
owns validation, scaling, the fit / partial_fit loops, batched encoding, scoring and
device-free pickling. Only numpy and scipy cross the public boundary.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from ._config import TrainConfig
from ._data import (
    check_streamed,
    fit_global_scale,
    is_streamed,
    iter_batches,
    output_dtype,
    resolve_device,
    sample_rows,
    scale_rows,
    to_device,
)
from ._fitting import FitLoop, broadcast_from_rank0, local_batch_size, shard_for_rank
from ._sparse import RowStack
from ._training import DivergenceError, Trainer, deterministic

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_INIT_SAMPLE = 16_384  # rows used for the scale, b_dec and the loss scale at init
_STREAM_WARMUP = 100  # warm-up steps of partial_fit, whose total length is unknown


def reject_strings(X) -> None:
    """Refuse text before scikit-learn's validation could parse "1.5" into 1.5."""
    if sp.issparse(X) or hasattr(X, "columns"):
        return  # sparse is refused by validate_data; frames fail loudly on text
    arr = X if isinstance(X, np.ndarray) else np.asarray(X, dtype=object)
    if arr.dtype.kind in "USV":
        raise TypeError(f"X has dtype {arr.dtype}: text is not accepted, pass numbers.")
    if arr.dtype == object and any(isinstance(v, (str, bytes)) for v in arr.ravel()):
        raise TypeError("X contains strings: text is not accepted, pass numbers.")


def _to_numpy(tree):
    """Nested dicts/lists of tensors -> the same with numpy arrays (on the host)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree


def _to_torch(tree, device):
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy()).to(device)
    if isinstance(tree, dict):
        return {k: _to_torch(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(v, device) for v in tree)
    return tree


def _optimizer_state(trainer: Trainer) -> dict:
    """The trainer's state without the model weights (those live in ``_model_state``)."""
    state = trainer.state_dict()
    del state["model"]
    return _to_numpy(state)


class BaseSparseAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fit / partial_fit / transform / score on top of a torch SAE model.

    Subclasses implement ``_model_class``, ``_model_config``, ``_check_sizes``,
    ``_export_fitted``, ``_level_widths``, ``_block_levels`` and ``_components_stack``.
    """

    _parameter_constraints: dict = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "aux_coef": [Interval(Real, 0, None, closed="left")],
        "normalize": [StrOptions({"global", "unit"}), None],
        "device": [str, torch.device],
        "dtype": [StrOptions(set(_DTYPES))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
    }

    # ------------------------------------------------------------ validation
    def _check_X(self, X, *, reset: bool):
        """Validated X: an array, or a memmap / sliceable store left on disk.

        Streamed data (``np.memmap``, h5py, zarr, ...) is checked block by block and
        never converted whole, so it may be larger than memory.
        """
        if is_streamed(X):
            check_streamed(X)
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        reject_strings(X)
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])

    def _device(self) -> torch.device:
        return resolve_device(self.device) if isinstance(self.device, str) else self.device

    # --------------------------------------------------------- construction
    def _new_model(self, config, device):
        return self._model_class(config, device=device, dtype=_DTYPES[self.dtype])

    def _initialize(self, X: np.ndarray, rng: np.random.RandomState, total_steps: int | None = None):
        """Fresh model: random weights from ``rng``, then scale and biases from data."""
        device = self._device()
        config = self._model_config(X.shape[1], X.shape[0], total_steps)
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        sample = sample_rows(X, _INIT_SAMPLE, rng)
        if sample.dtype not in (np.float32, np.float64):  # float16 caches, ints
            sample = sample.astype(np.float64)
        self.scale_ = fit_global_scale(sample) if self.normalize == "global" else 1.0
        model = self._new_model(config, device)
        model.reset_parameters(generator)
        x, _ = scale_rows(to_device(sample, device, _DTYPES[self.dtype]), self.normalize, self.scale_)
        model.init_from_data(x)
        self._config = config
        return model

    def _model_from_state(self, state: dict, device, config=None):
        model = self._new_model(config or self._config, device)
        model.load_state_dict(_to_torch(state, device))
        return model

    def _learning_rate(self) -> float:
        """``"auto"``: min(5e-3, 8e-4 / sqrt(width / 2**14)), with width the number of
        latents competing in the TopK: the width scaling of Gao et al. (Fig. 3), at four
        times their constant (2e-4 suits their runs of 1e5+ steps; on SmolLM2 runs of ~600
        steps it left held-out EV 0.05-0.07 behind), capped for tiny dictionaries."""
        if self.learning_rate == "auto":
            return min(5e-3, 8e-4 / math.sqrt(self._topk_width() / 2**14))
        return float(self.learning_rate)

    def _train_config(self, total_steps: int | None) -> TrainConfig:
        if total_steps is None:
            warmup = _STREAM_WARMUP
        else:
            warmup = max(1, min(1000, total_steps // 10))
        return TrainConfig(self._learning_rate(), total_steps, warmup)

    # ------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train on X for ``max_iter`` epochs of shuffled minibatches.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations, one row per token.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._check_X(X, reset=not (self.warm_start and hasattr(self, "_model_state")))
        self._check_sizes(X.shape[1])
        rng = check_random_state(self.random_state)
        device = self._device()
        shard = shard_for_rank(X)  # X itself unless torch.distributed is initialised
        batch = local_batch_size(self.batch_size)
        steps_per_epoch = math.ceil(shard.shape[0] / batch)
        total = self.max_iter * steps_per_epoch
        config = self._model_config(X.shape[1], X.shape[0], total)
        with deterministic(device.type == "cpu"):
            loop = FitLoop(self, shard, rng, steps_per_epoch, batch)
            self.loss_curve_ = []
            resumed = loop.resume(lambda: Trainer(self._new_model(config, device), self._train_config(total)))
            if not resumed:
                if self.warm_start and hasattr(self, "_model_state"):
                    model = self._model_from_state(self._model_state, device, config)
                else:
                    model = self._initialize(X, rng, total)
                broadcast_from_rank0(model, self)
                loop.trainer = Trainer(model, self._train_config(total))
            self._config = config
            with tqdm(total=total, initial=loop.trainer.step_count if resumed else 0, desc="fit",
                      disable=not self.verbose, leave=False) as bar:
                try:
                    loop.run(lambda rows: self._train_step(loop.trainer, rows, bar))
                except (DivergenceError, KeyboardInterrupt):
                    self.n_iter_ = loop.epoch  # the estimator keeps the last finished step
                    self._finish(loop.trainer)
                    raise
            end_of_fit = getattr(loop.trainer.model, "on_fit_end", None)
            if end_of_fit is not None:
                end_of_fit()
        self.n_iter_ = self.max_iter
        self._finish(loop.trainer)
        return self

    def _train_step(self, trainer, rows, bar):
        """One step on a numpy batch; the progress bar shows loss and FVU when verbose."""
        device, dtype = self._device(), _DTYPES[self.dtype]
        x, _ = scale_rows(to_device(rows, device, dtype), self.normalize, self.scale_)
        stats = trainer.step(x)
        if self.verbose:
            if trainer.step_count % 10 == 1:
                var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-30)
                bar.set_postfix(loss=f"{stats.loss.item():.4f}", fvu=f"{(stats.sq_error / var).item():.4f}")
            bar.update(1)
        return stats.loss

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One pass over X in minibatches of ``batch_size`` rows, in the given order.

        The first call initialises the model (scale and biases from this X); the learning
        rate warms up over the first 100 steps and then stays at ``learning_rate``. After
        ``sklearn_hsae.io.load``, whose files hold no optimizer state, the next call starts
        a fresh Adam optimizer (zero moments) that keeps counting steps from ``n_steps_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations, one row per token.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first = not hasattr(self, "_model_state")
        X = self._check_X(X, reset=first)
        device = self._device()
        with deterministic(device.type == "cpu"):
            trainer = self._stream_trainer(X, device, first)
            steps = math.ceil(X.shape[0] / self.batch_size)
            batches = iter_batches(X, self.batch_size)
            loss = self._run_batches(trainer, X, batches, steps, "partial_fit")
        self.loss_curve_ = [*getattr(self, "loss_curve_", []), loss]
        self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        self._finish(trainer, reuse=True)
        return self

    def _stream_trainer(self, X, device, first: bool) -> Trainer:
        """The trainer partial_fit continues: new, live, or rebuilt from numpy state."""
        if first:
            self._check_sizes(X.shape[1])
            model = self._initialize(X, check_random_state(self.random_state))
            broadcast_from_rank0(model, self)
            return Trainer(model, self._train_config(None))
        trainer = getattr(self, "_trainer", None)
        if trainer is None or next(trainer.model.parameters()).device != device:
            # Unpickled (numpy state only), moved to another device, or loaded by
            # sklearn_hsae.io, whose files hold no optimizer state.
            if trainer is None:
                saved = getattr(self, "_trainer_state", None)
            else:
                saved = _optimizer_state(trainer)
            trainer = Trainer(self._model_from_state(self._model_state, device), self._train_config(None))
            if saved is not None:
                trainer.load_state_dict(_to_torch(saved, device))
            else:
                # A fresh Adam (zero moments) that keeps counting steps from n_steps_.
                trainer.step_count = self.n_steps_
        # After fit the cosine schedule is over: streaming continues at a constant rate.
        trainer.config = self._train_config(None)
        return trainer

    def _run_batches(self, trainer, X, batches, n_steps: int, desc: str) -> float:
        """Train on each batch (partial_fit); return the mean loss."""
        total = None
        with tqdm(total=n_steps, desc=desc, disable=not self.verbose, leave=False) as bar:
            for rows in batches:
                loss = self._train_step(trainer, rows, bar)
                total = loss if total is None else total + loss
        return float(total) / n_steps

    def _finish(self, trainer: Trainer, reuse: bool = False) -> None:
        """Keep the live trainer and publish numpy copies of the fitted state.

        ``reuse`` (partial_fit) lets large derived arrays be updated in place.
        """
        self._trainer = trainer
        self.__dict__.pop("_trainer_state", None)
        self.n_steps_ = trainer.step_count
        self._model_state = _to_numpy(trainer.model.state_dict())
        self._export_fitted(trainer.model, reuse)

    def _integer_ranges(self) -> dict:
        """Valid ``[low, high)`` of every integer fitted array (``high=None``: unbounded).

        ``sklearn_hsae.io.load`` refuses a file whose integer arrays leave these ranges, so
        a hostile file cannot smuggle in an index that points outside a dictionary. An
        index that may be unassigned uses ``low=-1``.
        """
        return {}

    def _public_intercept(self, b_dec: np.ndarray) -> np.ndarray:
        """The decoder bias in input units (zero for per-row unit scaling)."""
        if self.normalize == "unit":
            return np.zeros_like(b_dec)
        return b_dec / self.scale_ if self.normalize == "global" else b_dec.copy()

    # ------------------------------------------------------------- encoding
    def _encode_blocks(self, X):
        """Yield (codes, row_scale, x_scaled, context) per batch of X, without gradients.

        ``context`` is whatever ``_encode_context(model)`` precomputes once per call.
        """
        device, dtype = self._device(), _DTYPES[self.dtype]
        model = self._model_from_state(self._model_state, device).eval()
        with torch.no_grad():
            context = self._encode_context(model)
            for rows in iter_batches(X, self.batch_size):
                x, row_scale = scale_rows(to_device(rows, device, dtype), self.normalize, self.scale_)
                yield model(x), row_scale, x, context

    def _encode_context(self, model):
        return None

    def _encode_levels(self, X, *, side_by_side: bool = False) -> list:
        """CSR codes of every level of X (validated), coarsest first; with
        ``side_by_side``, one CSR of all levels (``transform``). Blocks are copied into
        the result as they come (:class:`RowStack`), never held all at once."""
        dtype = output_dtype(X)
        widths = self._level_widths()
        stacks = [RowStack(X.shape[0], w) for w in ([sum(widths)] if side_by_side else widths)]
        for codes, scale, _, context in self._encode_blocks(X):
            levels = self._block_levels(codes, scale, dtype, context)
            if side_by_side:
                levels = [sp.hstack(levels, format="csr")]
            for stack, block in zip(stacks, levels):
                stack.add(block)
        return [stack.result(dtype) for stack in stacks]

    @property
    def _n_features_out(self) -> int:
        return sum(self._level_widths())

    def transform(self, X):
        """Sparse codes of X, every level side by side.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations.

        Returns
        -------
        codes : scipy.sparse.csr_matrix of shape (n_samples, n_components_out)
            Codes in the input's units and float dtype; columns follow
            ``get_feature_names_out``.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self._encode_levels(X, side_by_side=True)[0]

    def inverse_transform(self, X):
        """Reconstruct activations from codes, in the original input scale.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_components_out)
            Codes as returned by ``transform`` (CSR or dense).

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            ``X @ components + intercept_``.
        """
        check_is_fitted(self)
        Z = check_array(X, accept_sparse=("csr", "csc", "coo"), dtype=[np.float64, np.float32])
        if Z.shape[1] != self._n_features_out:
            raise ValueError(
                f"X has {Z.shape[1]} columns, but {type(self).__name__} produces "
                f"{self._n_features_out} code columns."
            )
        components = self._components_stack().astype(Z.dtype, copy=False)
        return np.asarray(Z @ components) + self.intercept_.astype(Z.dtype)

    def score(self, X, y=None):
        """Explained variance ``1 - FVU`` of the reconstruction of X (higher is better).

        ``FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over all rows of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Explained variance of the reconstruction.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        # One pass: sum ||x - x_hat||^2, sum x and sum ||x||^2 (total variance at the end).
        err = sq = 0.0
        total = torch.zeros(X.shape[1], dtype=torch.float64)
        for codes, row_scale, x, _ in self._encode_blocks(X):
            x_orig = (x * row_scale[:, None]).double()
            x_hat = codes.x_hat.double() * row_scale.double()[:, None]
            err += float((x_orig - x_hat).pow(2).sum())
            sq += float(x_orig.pow(2).sum())
            total += x_orig.sum(dim=0).cpu()
        variance = sq - float(total.pow(2).sum()) / X.shape[0]
        if variance <= 1e-12 * max(sq, 1e-300):
            return 1.0 if err == 0 else -np.inf
        return 1.0 - err / variance

    def get_feature_names_out(self, input_features=None):
        """Names of the code columns, in the order of ``transform``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            One name per column of ``transform``.
        """
        check_is_fitted(self)
        default = super().get_feature_names_out(input_features)  # validates input_features
        return self._code_names(default)

    def _code_names(self, default: np.ndarray) -> np.ndarray:
        return default

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # --------------------------------------------------------------- pickle
    def __getstate__(self):
        """Pickle numpy only: a model trained on CUDA loads on a CPU-only machine."""
        state = super().__getstate__()
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_trainer_state"] = _optimizer_state(trainer)
        return state
