"""First-letter feature absorption, a simplified SAEBench protocol."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.utils._param_validation import HasMethods, Interval, validate_params
from sklearn.utils.validation import check_array

from .autoencoder import check_autoencoder


def _is_letter_word(token) -> bool:
    """A whole word after a space, ASCII letters only: ``" short"``."""
    if not isinstance(token, str) or len(token) < 2:
        return False
    return token[0].isspace() and token[1:].isascii() and token[1:].isalpha()


def _dense(A) -> np.ndarray:
    return A.toarray() if sp.issparse(A) else np.asarray(A, dtype=np.float64)


def _decoder_rows(estimator, n_latents: int, n_features: int, sparse: bool) -> np.ndarray:
    """Row j: what latent j adds to a reconstruction at code 1 (decoder direction x norm).

    Codes go in the format ``transform`` gave (CSR or dense), 1024 latents at a time.
    """
    def decode(Z):
        return _dense(estimator.inverse_transform(Z if sparse else Z.toarray()))

    origin = decode(sp.csr_matrix((1, n_latents)))  # (1, d)
    eye = sp.identity(n_latents, dtype=np.float64, format="csr")
    D = np.vstack([decode(eye[i : i + 1024]) for i in range(0, n_latents, 1024)]) - origin
    if D.shape != (n_latents, n_features):
        raise ValueError(f"inverse_transform of {n_latents} codes gave shape {D.shape}.")
    return D


@validate_params(
    {
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "X": ["array-like"],
        "tokens": ["array-like"],
        "n_main": [Interval(Integral, 1, None, closed="left")],
        "cos_threshold": [Interval(Real, -1, 1, closed="both")],
        "projection_fraction": [Interval(Real, 0, 1, closed="both")],
        "min_count": [Interval(Integral, 1, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def first_letter_absorption(
    estimator,
    X,
    tokens,
    *,
    n_main=1,
    cos_threshold=0.025,
    projection_fraction=0.4,
    min_count=20,
    cv=3,
    C=1.0,
):
    """Feature absorption on the first-letter task, a simplified SAEBench protocol.

    Chanin et al. (2024) find that an SAE latent which seems to mean "starts with S"
    stays silent on some S-words because a more specific latent (say, "short") has
    *absorbed* the S direction and fires instead. This metric measures that:

    1. **Tokens.** Rows whose token is a whole word after a space: one whitespace
       character, then ASCII letters only (``" short"``). Label: its first letter,
       lower-cased. Letters with fewer than ``min_count`` such tokens are left out.
    2. **Probe.** A multinomial logistic regression on the raw rows predicts the letter.
       Its predictions are out-of-fold: ``cv`` folds grouped by word, so the probe is
       judged on words it never saw. The probe direction of a letter is its
       coefficient row, refit on all tokens (unit norm, input space).
    3. **Main latents.** For each letter, the ``n_main`` latents with the largest gap
       between their mean code on tokens of that letter and on the other tokens.
    4. **Per token.** Among the tokens of a letter that the probe classifies correctly
       (true positives), the *main miss* ones are those where no main latent fires.
       A main-miss token is *absorbed* when an active non-main latent j has a decoder
       row whose cosine with the probe direction is at least ``cos_threshold`` and whose
       contribution ``code_j * (decoder_j . probe)`` is at least ``projection_fraction``
       of the summed positive contributions of all active latents along the probe.

    The absorption rate of a letter is the fraction of its true positives that are
    absorbed; ``absorption_rate`` is the mean over letters (those with true positives). Decoder rows are read with
    ``inverse_transform`` (code e_j minus code 0), so any linear-decoder estimator of the
    package works, its hierarchy levels side by side. Simplified against SAEBench: no
    k-sparse probing for the main latents, no feature-splitting check, and the model's
    real context instead of prompts with single words.

    The cosine threshold is SAEBench's, set for 2304 dimensions; in SmolLM2's 576 random
    directions reach ``|cos|`` 0.04 easily, so the projection-share condition does most of
    the work. Measured on SmolLM2 layer 15 with small SAEs (``benchmarks/realdata.py``):
    the main latents came out word-specific (``" the"`` for t, ``" said"``/``" says"``
    for s) and missed 60-70% of the true positives, yet no single other latent carried
    40% of the probe projection (median largest share 0.13-0.19), so the absorption
    rate was about 0: the letter was spread over many latents rather than absorbed.

    Parameters
    ----------
    estimator : fitted estimator
        Maps activations to codes (``transform``) and back (``inverse_transform``).
    X : array-like of shape (n_tokens, n_features)
        Token activations, e.g. ``fetch_text_activations().X``.
    tokens : array-like of str of shape (n_tokens,)
        The token string of every row (``" short"``).
    n_main : int, default=1
        Main latents per letter.
    cos_threshold : float, default=0.025
        Minimum cosine between an absorbing latent's decoder row and the probe direction
        (SAEBench's value).
    projection_fraction : float, default=0.4
        Minimum share of the active latents' positive projection on the probe direction
        that the absorbing latent must carry.
    min_count : int, default=20
        Tokens a letter needs to be evaluated.
    cv : int, default=3
        Folds of the grouped cross-validation of the probe.
    C : float, default=1.0
        Inverse L2 strength of the probe (rows are scaled to unit mean norm first).

    Returns
    -------
    result : dict
        ``absorption_rate`` (mean over the letters with true positives),
        ``main_miss_rate`` (mean over the same letters of the fraction of true positives
        where no main latent fires), ``probe_accuracy``
        (out-of-fold, all selected tokens), and per letter in ``letters`` order:
        ``absorption_rate_per_letter``, ``main_miss_rate_per_letter``,
        ``n_true_positives``, ``main_latents`` (n_letters, n_main) and ``main_cos``
        (cosine of each main latent's decoder row with the probe direction).

    References
    ----------
    D. Chanin, J. Wilken-Smith, T. Dulka, H. Bhatnagar, J. Bloom. "A is for Absorption:
    Studying Feature Splitting and Absorption in Sparse Autoencoders", arXiv:2409.14507.
    A. Karvonen et al. "SAEBench", arXiv:2503.09532.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn_hsae.metrics import first_letter_absorption
    >>> rng = np.random.default_rng(0)
    >>> words = [" apple", " ant", " arm", " bee", " bat", " bus"]
    >>> tokens = np.repeat(words, 20)
    >>> X = np.eye(8)[[0] * 60 + [1] * 60] + 0.01 * rng.standard_normal((120, 8))
    >>> r = first_letter_absorption(FunctionTransformer().fit(X), X, tokens)
    >>> r["letters"].tolist(), float(r["absorption_rate"]), float(r["probe_accuracy"])
    (['a', 'b'], 0.0, 1.0)
    """
    check_autoencoder(estimator)
    X = check_array(X, dtype=[np.float32, np.float64], input_name="X")
    tokens = np.asarray(tokens, dtype=object)
    if tokens.shape != (len(X),):
        raise ValueError(f"tokens has shape {tokens.shape}, expected ({len(X)},): one per row of X.")
    selected, words, first, letters = _letter_tokens(tokens, min_count, cv)
    predicted, directions = _probe(X[selected], first, words, letters, cv, C)

    codes = estimator.transform(X[selected])
    Z = sp.csr_matrix(codes)  # (n_selected, m)
    Z.eliminate_zeros()
    D = _decoder_rows(estimator, Z.shape[1], X.shape[1], sp.issparse(codes))  # (m, d)
    per_letter = [
        _score_letter(Z, D, u, first == letter, predicted == letter, n_main, cos_threshold,
                      projection_fraction)
        for letter, u in zip(letters, directions)
    ]
    columns = {key: np.asarray([r[key] for r in per_letter]) for key in per_letter[0]}
    scored = columns["n_true_positives"] > 0
    if not scored.any():
        raise ValueError("The probe classified no token correctly: nothing to measure.")
    return {
        "absorption_rate": float(columns["absorption"][scored].mean()),
        "main_miss_rate": float(columns["miss"][scored].mean()),
        "probe_accuracy": float(np.mean(predicted == first)),
        "letters": letters.astype(str),
        "absorption_rate_per_letter": columns["absorption"],
        "main_miss_rate_per_letter": columns["miss"],
        "n_true_positives": columns["n_true_positives"],
        "main_latents": columns["main"],
        "main_cos": columns["main_cos"],
    }


def _letter_tokens(tokens, min_count: int, cv: int):
    """Rows of letter words, the words, their first letters, and the letters kept."""
    selected = np.flatnonzero([_is_letter_word(t) for t in tokens])
    words = np.asarray([tokens[i].strip().lower() for i in selected], dtype=object)
    first = np.asarray([w[0] for w in words], dtype=object)
    letters, counts = np.unique(first, return_counts=True)
    letters = letters[counts >= min_count]
    if len(letters) < 2:
        raise ValueError(
            f"Need at least two letters with min_count={min_count} single-word tokens, "
            f"found {len(letters)}."
        )
    keep = np.isin(first, letters)
    if len(np.unique(words[keep])) < cv:
        raise ValueError(f"cv={cv} folds grouped by word need at least {cv} distinct words.")
    return selected[keep], words[keep], first[keep], letters


def _probe(X, first, words, letters, cv: int, C: float):
    """Out-of-fold letter predictions (folds grouped by word), and unit probe directions
    (n_letters, d) in input space from a probe fitted on all rows."""
    X = X.astype(np.float64)
    X /= np.linalg.norm(X, axis=1).mean()  # one factor for the solver: directions unchanged
    probe = LogisticRegression(C=C, max_iter=2000)
    predicted = cross_val_predict(probe, X, first, groups=words, cv=GroupKFold(cv))
    probe.fit(X, first)
    # Two classes give one coefficient row, for letters[1].
    directions = probe.coef_ if len(letters) > 2 else np.vstack([-probe.coef_, probe.coef_])
    return predicted, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _score_letter(Z, D, u, is_letter, is_predicted, n_main, cos_threshold, projection_fraction):
    """Main latents of one letter and its main-miss and absorption rates (see above)."""
    gap = np.asarray(Z[is_letter].mean(axis=0) - Z[~is_letter].mean(axis=0)).ravel()  # (m,)
    main = np.argsort(-gap, kind="stable")[:n_main]
    along = D @ u  # (m,): what a unit code of each latent adds along the probe direction
    norms = np.linalg.norm(D, axis=1)
    cos = np.divide(along, norms, out=np.zeros_like(along), where=norms > 0)
    tp = np.flatnonzero(is_letter & is_predicted)
    n_absorbed = n_missed = 0
    for t in tp:
        active = Z.indices[Z.indptr[t] : Z.indptr[t + 1]]
        codes = Z.data[Z.indptr[t] : Z.indptr[t + 1]]
        active, codes = active[codes > 0], codes[codes > 0]
        if np.isin(main, active).any():
            continue
        n_missed += 1
        contribution = codes * along[active]  # along the probe direction
        total = np.clip(contribution, 0, None).sum()
        absorbers = (
            ~np.isin(active, main)
            & (cos[active] >= cos_threshold)
            & (contribution > 0)
            & (contribution >= projection_fraction * total)
        )
        n_absorbed += bool(absorbers.any())
    n_tp = max(len(tp), 1)
    return {"absorption": n_absorbed / n_tp, "miss": n_missed / n_tp, "n_true_positives": len(tp),
            "main": main, "main_cos": cos[main]}
