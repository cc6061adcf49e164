"""CE loss recovered: splice an autoencoder's reconstruction into a language model."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from .autoencoder import check_autoencoder, reconstruct
from .forward import next_token_losses
from .language_model import load_model
from .tokens import check_texts, tokenize


@validate_params(
    {
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "texts": "no_validation",
        "model": "no_validation",
        "layer": [Interval(Integral, 1, None, closed="left")],
        "tokenizer": "no_validation",
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_norm": [Interval(Real, 0, None, closed="neither"), None],
        "max_length": [Interval(Integral, 2, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def ce_loss_recovered(
    estimator,
    texts,
    model="smollm2-135m",
    layer=15,
    *,
    tokenizer=None,
    batch_size=16,
    max_norm=1000.0,
    max_length=512,
):
    """How much of the language model's next-token loss survives splicing in an SAE.

    The residual stream after block ``layer`` is replaced by
    ``estimator.inverse_transform(estimator.transform(h))`` and the model's cross-entropy
    (CE) is compared with the clean model and with two ablations::

        recovered      = (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean)
        recovered_mean = (CE_mean_ablation - CE_spliced) / (CE_mean_ablation - CE_clean)

    1 means the reconstruction is as good as the real activations, 0 as bad as zeroing
    them. The same positions are intervened on in every condition: all positions >= 1
    whose clean residual norm is at most ``max_norm``. Position 0 (the prepended BOS) and
    rare massive-norm tokens (norm above ``max_norm``, which an SAE trained on
    :func:`~sklearn_hsae.datasets.extract_activations` output never saw) keep their clean
    value. Mean ablation uses the mean of the intervened clean rows.

    CE is the mean over tokens, in nats, of the predictions made at positions p >= 1 of
    token p + 1 (the prediction at position 0 only sees the untouched BOS). A text of n
    tokens contributes n - 1 predictions.

    Any fitted estimator with ``transform`` and ``inverse_transform`` works, e.g.
    :class:`~sklearn_hsae.HierarchicalSparseAutoencoder` or
    :class:`~sklearn_hsae.SparseAutoencoder` fitted on activations of the same model and
    layer. All rows are encoded in one ``transform`` call.

    Parameters
    ----------
    estimator : fitted estimator
        Maps activations (n, d_model) to codes and back.
    texts : list of str
        Evaluation texts (held out from the estimator's training data).
    model : str, os.PathLike or transformers model, default="smollm2-135m"
        As in :func:`~sklearn_hsae.datasets.extract_activations`.
    layer : int, default=15
        Block after which the residual stream is replaced.
    tokenizer : transformers tokenizer or None, default=None
        The tokenizer of a loaded ``model`` object.
    batch_size : int, default=16
        Texts per forward pass (the logits of a batch take B x T x vocabulary floats).
    max_norm : float or None, default=1000.0
        Positions with a larger clean residual norm are left clean; None intervenes on
        every position >= 1.
    max_length : int, default=512
        Tokens per text, BOS included; longer texts are cut.

    Returns
    -------
    result : dict
        ``ce_loss_recovered`` and ``ce_loss_recovered_mean_ablation`` (the ratios),
        ``ce_clean``, ``ce_spliced``, ``ce_zero_ablation`` and ``ce_mean_ablation``
        (nats per token), ``explained_variance`` (1 - FVU of the intervened rows),
        ``n_predictions`` (scored predictions), ``n_spliced`` (positions replaced) and
        ``n_kept_clean`` (positions >= 1 left clean for their norm).

    Examples
    --------
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn_hsae.metrics import ce_loss_recovered
    >>> identity = FunctionTransformer().fit([[0.0]])  # a perfect reconstruction
    >>> r = ce_loss_recovered(identity, ["The cat sat on the mat."], layer=6)
    >>> r["ce_loss_recovered"], r["ce_spliced"] == r["ce_clean"], r["n_predictions"]
    (1.0, True, 6)
    """
    check_autoencoder(estimator)
    texts = check_texts(texts)
    lm = load_model(model, tokenizer)
    layer = lm.check_layer(layer)
    ids, _ = tokenize(lm, texts, max_length)
    if sum(len(row) - 2 for row in ids) < 1:
        raise ValueError("No prediction from a position >= 1: give texts of two tokens or more.")

    clean, clean_h = _clean_pass(lm, ids, batch_size, layer)
    where = [_intervened(h, max_norm) for h in clean_h]  # (L_i,) bool per text
    rows = np.concatenate([h[ok] for h, ok in zip(clean_h, where)])  # (n_spliced, d)
    if len(rows) == 0:
        raise ValueError(f"Every position >= 1 has a norm above max_norm={max_norm}.")
    recon = reconstruct(estimator, rows)
    mean = np.broadcast_to(rows.mean(axis=0, dtype=np.float64).astype(np.float32), rows.shape)
    zeros = np.zeros_like(rows)
    offsets = np.cumsum([0] + [int(ok.sum()) for ok in where])

    def run(values):
        return _mean_ce(next_token_losses(lm, ids, batch_size, layer, _splice(where, offsets, values)))

    ce = {"clean": _mean_ce(clean), "spliced": run(recon), "zero": run(zeros), "mean": run(mean)}
    centred = rows - rows.mean(axis=0, dtype=np.float64)
    fvu = float(((rows.astype(np.float64) - recon) ** 2).sum() / (centred**2).sum())
    return {
        "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"]),
        "ce_loss_recovered_mean_ablation": (ce["mean"] - ce["spliced"]) / (ce["mean"] - ce["clean"]),
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablation": ce["zero"],
        "ce_mean_ablation": ce["mean"],
        "explained_variance": 1.0 - fvu,
        "n_predictions": int(sum(len(loss) - 1 for loss in clean)),
        "n_spliced": len(rows),
        "n_kept_clean": int(sum(len(ok) - 1 - ok.sum() for ok in where)),
    }


def _clean_pass(lm, ids, batch_size: int, layer: int):
    """Clean losses, and the residual after block ``layer`` of every text, (L_i, d)."""
    residuals = [None] * len(ids)

    def capture(rows, h):
        for b, i in enumerate(rows):
            residuals[i] = h[b, : len(ids[i])].float().numpy().copy()
        return None  # leave the forward pass as it is

    return next_token_losses(lm, ids, batch_size, layer, capture), residuals


def _intervened(h: np.ndarray, max_norm) -> np.ndarray:
    """Positions >= 1 whose clean norm is at most ``max_norm``: the ones we replace."""
    ok = np.arange(len(h)) >= 1
    if max_norm is not None:
        ok &= np.linalg.norm(h, axis=1) <= max_norm
    return ok


def _splice(where, offsets, values: np.ndarray):
    """A patch writing ``values`` (stacked like the intervened rows, text after text)
    into the intervened slots of every text of a batch."""

    def patch(batch_rows, h):
        new = h.clone()  # (B, T, d)
        for b, i in enumerate(batch_rows):
            slots = torch.from_numpy(np.flatnonzero(where[i]))
            block = np.ascontiguousarray(values[offsets[i] : offsets[i + 1]])  # (n_slots, d)
            new[b, slots] = torch.as_tensor(block, dtype=h.dtype)
        return new

    return patch


def _mean_ce(losses) -> float:
    """Mean over all predictions made at positions >= 1 (entry p is position p's)."""
    return float(np.concatenate([loss[1:] for loss in losses]).mean())

