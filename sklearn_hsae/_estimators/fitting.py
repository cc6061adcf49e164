"""The training half of the estimators: fit, partial_fit, and what they build.

A mixin of :class:`~.base.BaseSparseAutoencoder`: it turns the estimator's parameters
into the frozen configs of ``_config.py`` (model, optimiser, loop), builds the model the
subclass's ``_architecture()`` names, and hands everything to ``_training``, which never
sees the estimator.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state

from .._config import TrainConfig
from .._data import fit_global_scale, iter_batches, sample_rows, scale_rows, to_device, tree_to_device, tree_to_numpy
from .._training import DivergenceError, Trainer, deterministic, threads_for
from .._training.distributed import broadcast_float, broadcast_model, local_batch_size, shard_for_rank
from .._training.loop import FitLoop, LoopConfig, run_stream

DTYPES = {"float32": torch.float32, "float64": torch.float64}
_INIT_SAMPLE = 16_384  # rows used for the scale, b_dec and the loss scale at init
# Parameters that may change between an interrupted fit and its resumption.
_FREE_PARAMS = {"verbose", "checkpoint_dir", "checkpoint_every", "device", "warm_start"}


def _comparable_params(est) -> dict:
    """The parameters a checkpoint must share with the fit that resumes it."""
    params = {}
    for key, value in est.get_params().items():
        if key in _FREE_PARAMS or isinstance(value, np.random.RandomState):
            continue
        params[key] = list(value) if isinstance(value, (tuple, np.ndarray)) else value
    return params


class FittingMixin:
    """fit / partial_fit for any architecture (``_architecture()`` of the subclass)."""

    # --------------------------------------------------------- construction
    def _model_config(self, n_features: int, n_samples: int, total_steps: int | None = None):
        """The model's frozen config; raises ValueError for sizes that do not fit."""
        config_class, _ = self._architecture()
        return config_class.from_params(self.get_params(deep=False), n_features, n_samples, total_steps)

    def _fit_config(self, n_features: int, n_samples: int, total_steps: int | None):
        """``_model_config`` for a fit that is about to start: also warns about settings
        that train but are probably not what the user meant."""
        config = self._model_config(n_features, n_samples, total_steps)
        for message in config.fit_warnings():
            warnings.warn(message, UserWarning, stacklevel=4)
        return config

    def _check_sizes(self, n_features: int) -> None:
        self._model_config(n_features, 1)

    def _new_model(self, config, device):
        _, model_class = self._architecture()
        model = model_class(config, device=device, dtype=DTYPES[self.dtype])
        # How to run, not what to learn: kept out of the config (and of saved files' configs).
        model.compile_mode = getattr(self, "compile", False)
        return model

    def _model_from_state(self, state: dict, device, config=None):
        model = self._new_model(config or self._config, device)
        model.load_state_dict(tree_to_device(state, device))
        return model

    def _initialize(self, X, rng: np.random.RandomState, config):
        """Fresh model: random weights from ``rng``, then scale and biases from data."""
        device = self._device()
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        sample = sample_rows(X, _INIT_SAMPLE, rng)
        if sample.dtype not in (np.float32, np.float64):  # float16 caches, ints
            sample = sample.astype(np.float64)
        self.scale_ = fit_global_scale(sample) if self.normalize == "global" else 1.0
        model = self._new_model(config, device)
        model.reset_parameters(generator)
        model.init_from_data(self._prepare(sample))
        broadcast_model(model)  # every rank starts from rank 0's weights and scale
        self.scale_ = broadcast_float(self.scale_)
        return model

    def _threads(self, config, batch_size: int, share: float = 1.0):
        """One thread for tiny steps on CPU (see ``threads_for``); ``share`` scales the
        work (encoding without a backward pass is about a third of a step)."""
        cpu = self._device().type == "cpu"
        return threads_for(batch_size * config.work_per_row * share if cpu else float("inf"))

    def _prepare(self, rows: np.ndarray) -> torch.Tensor:
        """A numpy block of rows as the scaled tensor the model sees."""
        x = to_device(rows, self._device(), DTYPES[self.dtype])
        return scale_rows(x, self.normalize, self.scale_)[0]

    def _loop_config(self, batch_size: int) -> LoopConfig:
        return LoopConfig(
            max_iter=self.max_iter,
            batch_size=batch_size,
            checkpoint_dir=self.checkpoint_dir,
            checkpoint_every=self.checkpoint_every,
            identity={"params": _comparable_params(self)},
            divergence_hint=(
                f"the inputs have an extreme scale (normalize={self.normalize!r}); lower "
                "learning_rate or use normalize='global'"
            ),
            verbose=self.verbose,
        )

    # ------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train on X for ``max_iter`` epochs of shuffled minibatches.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Activations, one row per token (a memmap may be larger than memory).
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        warm = self.warm_start and self._has_model_state()
        X = self._check_X(X, reset=not warm)
        rng = check_random_state(self.random_state)
        device = self._device()
        shard = shard_for_rank(X)  # X itself unless torch.distributed is initialised
        batch = local_batch_size(self.batch_size)
        total = self.max_iter * math.ceil(shard.shape[0] / batch)
        config = self._fit_config(X.shape[1], X.shape[0], total)
        train = TrainConfig.from_params(self.learning_rate, config.lr_widths, total)
        loop = FitLoop(self._loop_config(batch), shard, rng, self._prepare)
        with deterministic(device.type == "cpu"), self._threads(config, batch):
            extra = loop.resume(lambda: Trainer(self._new_model(config, device), train))
            if extra is not None:
                self.scale_ = extra["scale"]
                trainer = loop.trainer
            elif warm:
                trainer = Trainer(self._model_from_state(self._model_state, device, config), train)
            else:
                trainer = Trainer(self._initialize(X, rng, config), train)
            self._config = config
            try:
                loop.run(trainer, {"scale": float(self.scale_)})
            except (DivergenceError, KeyboardInterrupt):
                self._finish(trainer, loop.epoch, loop.loss_curve, loop.l0)  # the last finished step
                raise
            trainer.model.on_fit_end()
        self._finish(trainer, self.max_iter, loop.loss_curve, loop.l0)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One pass over X in minibatches of ``batch_size`` rows, in the given order.

        The first call initialises the model (scale and biases from this X); the learning
        rate warms up over the first 100 steps and then stays at ``learning_rate``. After
        ``sklearn_hsae.io.load``, whose files hold no optimizer state, the next call starts
        a fresh Adam optimizer (zero moments) that keeps counting steps from ``n_steps_``.
        The attributes derived from the weights (``components_``, ``intercept_``, ...)
        are rebuilt when first read after a call, into the arrays read before.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Activations, one row per token.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first = not self._has_model_state()
        X = self._check_X(X, reset=first)
        device = self._device()
        config = self._fit_config(X.shape[1], X.shape[0], None) if first else self._config
        with deterministic(device.type == "cpu"), self._threads(config, self.batch_size):
            trainer = self._stream_trainer(X, device, config if first else None)
            steps = math.ceil(X.shape[0] / self.batch_size)
            loss, l0 = run_stream(trainer, iter_batches(X, self.batch_size), steps,
                                  self._prepare, self.verbose, "partial_fit")
        self._finish(trainer, getattr(self, "n_iter_", 0) + 1,
                     [*getattr(self, "loss_curve_", []), loss], l0, reuse=True)
        return self

    def _stream_trainer(self, X, device, config=None) -> Trainer:
        """The trainer partial_fit continues: new (given the first call's ``config``),
        live, or rebuilt from numpy state."""
        if config is not None:
            model = self._initialize(X, check_random_state(self.random_state), config)
            self._config = config
            return Trainer(model, TrainConfig.from_params(self.learning_rate, config.lr_widths, None))
        trainer = getattr(self, "_trainer", None)
        if trainer is None or next(trainer.model.parameters()).device != device:
            # Unpickled (numpy state only), moved to another device, or loaded by
            # sklearn_hsae.io, whose files hold no optimizer state.
            saved = getattr(self, "_trainer_state", None) if trainer is None else self._optimizer_state(trainer)
            model = self._model_from_state(self._model_state, device)
            trainer = Trainer(model, TrainConfig.from_params(self.learning_rate, self._config.lr_widths, None))
            if saved is not None:
                trainer.load_state_dict(tree_to_device(saved, device))
            else:
                # A fresh Adam (zero moments) that keeps counting steps from n_steps_.
                trainer.step_count = self.n_steps_
        # After fit the cosine schedule is over: streaming continues at a constant rate.
        trainer.config = TrainConfig.from_params(self.learning_rate, self._config.lr_widths, None)
        return trainer

    @staticmethod
    def _optimizer_state(trainer: Trainer) -> dict:
        """A trainer's state without the model weights (those are ``_model_state``)."""
        state = trainer.state_dict()
        del state["model"]
        return tree_to_numpy(state)

    def _finish(self, trainer: Trainer, n_iter: int, loss_curve: list, l0, reuse: bool = False) -> None:
        """Keep the live trainer and publish numpy copies of the fitted state.

        ``reuse`` (partial_fit): the derived arrays are exported when first read, into
        the previous ones where they fit.
        """
        self._trainer = trainer
        self.__dict__.pop("_trainer_state", None)
        self.n_iter_ = n_iter
        self.n_steps_ = trainer.step_count
        self.loss_curve_ = list(loss_curve)
        if l0 is not None:  # None: interrupted before the first epoch ended
            self.l0_ = [float(v) for v in l0]
        self.__dict__.pop("_model_state_cache", None)  # copied from the trainer when needed
        if reuse:
            self._defer_export(trainer.model)  # exported when first read
        else:
            self.__dict__.pop("_export_pending", None)
            self._export_fitted(trainer.model)

