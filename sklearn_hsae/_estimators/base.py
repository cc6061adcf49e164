"""scikit-learn glue shared by every estimator of the package, generic over any model.

A subclass names its architecture (``_architecture()``: a config class from
``_config.py`` and a model class from ``_models``) and stores its parameters; this base
owns validation, scaling, the fit / partial_fit loops, batched encoding, scoring,
fitted attributes and device-free pickling. Every model returns the same code form and
exports the same per-level dictionary (``_models.common``), so nothing here depends on
the architecture. Only numpy and scipy cross the public boundary.
"""

from __future__ import annotations

import itertools
import os
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from .._data import (
    check_streamed,
    from_torch,
    is_streamed,
    iter_batches,
    output_dtype,
    resolve_device,
    scale_rows,
    to_device,
    tree_to_numpy,
)
from .._sparse import RowStack, codes_to_csr
from .fitting import DTYPES, FittingMixin



class SparseCodes(NamedTuple):
    """Sparse codes of a flat SAE: one CSR matrix, as the only level."""

    levels: list
    """``[codes]``: one (n_samples, n_components) CSR matrix."""


def reject_strings(X) -> None:
    """Refuse text before scikit-learn's validation could parse "1.5" into 1.5."""
    if sp.issparse(X) or hasattr(X, "columns"):
        return  # sparse is refused by validate_data; frames fail loudly on text
    arr = X if isinstance(X, np.ndarray) else np.asarray(X, dtype=object)
    if arr.dtype.kind in "USV":
        raise TypeError(f"X has dtype {arr.dtype}: text is not accepted, pass numbers.")
    if arr.dtype == object and any(isinstance(v, (str, bytes)) for v in arr.ravel()):
        raise TypeError("X contains strings: text is not accepted, pass numbers.")


class BaseSparseAutoencoder(FittingMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                            BaseEstimator):
    """Fit / partial_fit (``fitting.py``) and transform / score on any torch SAE model.

    Subclasses implement ``_architecture()`` -> (config class, model class) and may
    extend ``_export_fitted`` with attributes of their own.
    """

    _parameter_constraints: dict = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "aux_coef": [Interval(Real, 0, None, closed="left")],
        "normalize": [StrOptions({"global", "unit"}), None],
        "device": [str, torch.device],
        "dtype": [StrOptions(set(DTYPES))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
    }

    # ------------------------------------------------------------ validation
    def _check_X(self, X, *, reset: bool):
        """Validated X: an array (torch tensors become numpy), or a memmap / sliceable
        store left on disk.

        Streamed data (``np.memmap``, h5py, zarr, ...) is checked block by block and
        never converted whole, so it may be larger than memory.
        """
        X = from_torch(X)
        if is_streamed(X):
            check_streamed(X)
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        reject_strings(X)
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    # ----------------------------------------------------- fitted attributes
    # Set by _export_fitted from the weights. After partial_fit they are published when
    # first read (``__getattr__``): a streaming loop that never looks at the dictionary
    # does not rebuild it every call (13 ms of a 300 ms routed 2048 x 16 step at B=4096).
    _derived_attributes: tuple = ("components_", "components_by_level_", "parent_index_by_level_",
                                  "intercept_by_level_", "intercept_")

    def _export_fitted(self, model, previous: np.ndarray | None = None) -> None:
        """Publish the model's dictionary as numpy fitted attributes.

        ``components_`` holds every level's unit directions in the order of
        ``transform``'s columns; ``components_by_level_`` are views of it. ``previous``
        (partial_fit): the last ``components_``, updated in place when it still fits.
        """
        widths = self._config.widths
        starts = np.cumsum([0, *widths])

        def by_level(components):
            return [components[a:b] for a, b in itertools.pairwise(starts)]

        if (previous is not None and previous.shape == (sum(widths), self.n_features_in_)
                and previous.dtype == np.dtype(self.dtype)
                and next(model.parameters()).device.type == "cpu"):
            # In place: a fresh 10-100 MB array costs page faults.
            dictionary = model.dictionary(out=[torch.from_numpy(c) for c in by_level(previous)])
            self.components_ = previous
        else:
            dictionary = model.dictionary()
            self.components_ = np.concatenate([c.cpu().numpy() for c in dictionary.components])
        self.components_by_level_ = by_level(self.components_)
        self.parent_index_by_level_ = [p.cpu().numpy().copy() for p in dictionary.parent_index]
        self.intercept_by_level_ = [self._public_intercept(b.cpu().numpy()) for b in dictionary.intercepts]
        self.intercept_ = self.intercept_by_level_[-1]

    def _defer_export(self, model) -> None:
        """Forget the derived attributes; ``__getattr__`` exports ``model``'s when asked."""
        _, unread = self.__dict__.pop("_export_pending", (None, None))
        previous = self.__dict__.get("components_", unread)  # the array to update in place
        for name in self._derived_attributes:
            self.__dict__.pop(name, None)
        self._export_pending = (model, previous)

    def _publish_pending(self) -> None:
        pending = self.__dict__.pop("_export_pending", None)
        if pending is not None:
            self._export_fitted(*pending)

    def __getattr__(self, name):
        # Called only when normal lookup fails: a derived attribute not yet published.
        if name in type(self)._derived_attributes and "_export_pending" in self.__dict__:
            self._publish_pending()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _public_intercept(self, b_dec: np.ndarray) -> np.ndarray:
        """The decoder bias in input units (zero for per-row unit scaling)."""
        if self.normalize == "unit":
            return np.zeros_like(b_dec)
        return b_dec / self.scale_ if self.normalize == "global" else b_dec.copy()

    def _integer_ranges(self) -> dict:
        """Valid ``[low, high)`` of every integer fitted array (``high=None``: unbounded).

        ``sklearn_hsae.io.load`` refuses a file whose integer arrays leave these ranges, so
        a hostile file cannot smuggle in an index that points outside a dictionary; -1
        marks a feature without a parent.
        """
        widths = self._config.widths
        ranges = {"parent_index_by_level_.0": (-1, 0)}
        for level in range(1, len(widths)):
            ranges[f"parent_index_by_level_.{level}"] = (-1, widths[level - 1])
        return ranges

    # ------------------------------------------------------------- encoding
    def _encode_blocks(self, X):
        """Yield (codes, row_scale, x_scaled) per batch of X, without gradients."""
        device, dtype = self._device(), DTYPES[self.dtype]
        model = self._model_from_state(self._model_state, device).eval()
        with torch.no_grad(), self._threads(self._config, self.batch_size, share=1 / 3):
            for rows in iter_batches(X, self.batch_size):
                x, row_scale = scale_rows(to_device(rows, device, dtype), self.normalize, self.scale_)
                yield model(x), row_scale, x

    def _encode_levels(self, X, *, side_by_side: bool = False) -> list:
        """CSR codes of every level of X (validated), coarsest first; with
        ``side_by_side``, one CSR of all levels (``transform``). Blocks are copied into
        the result as they come (:class:`RowStack`), never held all at once."""
        dtype = output_dtype(X)
        widths = self._config.widths
        stacks = [RowStack(X.shape[0], w) for w in ([sum(widths)] if side_by_side else widths)]
        bar = tqdm(total=X.shape[0], desc="encode", unit="row", unit_scale=True,
                   disable=not self.verbose, leave=False)
        for codes, scale, _ in self._encode_blocks(X):
            bar.update(codes.x_hat.shape[0])
            levels = [codes_to_csr(v, i, w, dtype, scale)
                      for v, i, w in zip(codes.values, codes.indices, widths)]
            if side_by_side:
                levels = [sp.hstack(levels, format="csr")] if len(levels) > 1 else levels
            for stack, block in zip(stacks, levels):
                stack.add(block)
        bar.close()
        return [stack.result(dtype) for stack in stacks]

    def encode(self, X):
        """Codes of X, one CSR matrix per level, coarsest first.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Activations to encode, in blocks of ``batch_size`` rows.

        Returns
        -------
        codes : HierarchicalCodes or SparseCodes
            ``codes.levels``: every level's CSR; ``scipy.sparse.hstack(codes.levels)``
            is ``transform(X)``. The hierarchical estimator's codes also name
            ``levels[0]`` and ``levels[1]`` as ``codes.parent`` and ``codes.child``.
        """
        check_is_fitted(self)
        return self._codes(self._encode_levels(self._check_X(X, reset=False)))

    @property
    def _n_features_out(self) -> int:
        return sum(self._config.widths)

    def transform(self, X):
        """Sparse codes of X, every level side by side.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Activations.

        Returns
        -------
        codes : scipy.sparse.csr_matrix of shape (n_samples, n_components_out)
            Codes in the input's units and float dtype (float64 for anything but
            float32 / float64; float16 and bfloat16 tensors give float32); columns follow
            ``get_feature_names_out`` and multiply the rows of ``components_``.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self._encode_levels(X, side_by_side=True)[0]

    def inverse_transform(self, X, level=None):
        """Reconstruct activations from codes, in the original input scale.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_components_out)
            Codes as returned by ``transform`` (CSR or dense).
        level : int or None, default=None
            The level whose reconstruction to return (negative counts from the finest);
            None is the model's own reconstruction, the one ``score`` measures. Where
            levels add up (routed, flat) level l uses the codes of levels 0..l; where
            every level reconstructs alone (tree) only level l's.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            ``codes @ components + intercept`` of the chosen level(s).
        """
        check_is_fitted(self)
        Z = check_array(X, accept_sparse=("csr", "csc", "coo"), dtype=[np.float64, np.float32])
        widths = self._config.widths
        if Z.shape[1] != sum(widths):
            raise ValueError(
                f"X has {Z.shape[1]} columns, but {type(self).__name__} produces "
                f"{sum(widths)} code columns."
            )
        n = len(widths)
        if level is None:
            level = n - 1
        elif not isinstance(level, Integral) or not -n <= level < n:
            raise ValueError(f"level={level!r} is not a level of this model; use an int in [{-n}, {n - 1}] or None.")
        level = int(level) % n
        starts = np.cumsum([0, *widths])
        _, model_class = self._architecture()
        first = 0 if model_class.cumulative else starts[level]
        stop = starts[level + 1]
        if first == 0 and stop == starts[-1]:
            block, atoms = Z, self.components_
        else:
            block = Z[:, first:stop]
            atoms = self.components_[first:stop]
        intercept = self.intercept_by_level_[level]
        return np.asarray(block @ atoms.astype(Z.dtype, copy=False)) + intercept.astype(Z.dtype)

    def score(self, X, y=None):
        """Explained variance ``1 - FVU`` of the reconstruction of X (higher is better).

        ``FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over all rows of X.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
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
        for codes, row_scale, x in self._encode_blocks(X):
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
        super().get_feature_names_out(input_features)  # validates input_features
        names = self._config.feature_names(type(self).__name__.lower())
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # --------------------------------------------------------------- state
    @property
    def _model_state(self) -> dict:
        """The model's ``state_dict()`` as numpy copies: from the live trainer when there
        is one (copied when asked for, not after every ``partial_fit``, where copying
        every weight cost ~10-15 ms of a routed 2048 x 16 step), else as loaded or
        unpickled. AttributeError before any fit."""
        trainer = self.__dict__.get("_trainer")
        if trainer is not None:
            return tree_to_numpy(trainer.model.state_dict())
        if "_model_state_cache" not in self.__dict__:
            raise AttributeError("_model_state")
        return self.__dict__["_model_state_cache"]

    @_model_state.setter
    def _model_state(self, state: dict) -> None:
        self.__dict__["_model_state_cache"] = state

    def _has_model_state(self) -> bool:
        """Whether a model exists (fitted, loaded or unpickled), without copying it."""
        return "_trainer" in self.__dict__ or "_model_state_cache" in self.__dict__

    # --------------------------------------------------------------- pickle
    def __getstate__(self):
        """Pickle numpy only: a model trained on CUDA loads on a CPU-only machine."""
        self._publish_pending()  # the pickle holds the arrays, not the live model
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        if "_trainer" in state:
            state["_model_state_cache"] = self._model_state
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_trainer_state"] = self._optimizer_state(trainer)
        return state
