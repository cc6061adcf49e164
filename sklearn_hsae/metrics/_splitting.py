"""Feature splitting on the first-letter task: SAEBench's k-sparse probing rule."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params
from sklearn.utils.fixes import parse_version
from sklearn.utils.validation import check_array

from .._lm.absorption import _letter_tokens
from ._tree import tree_view

_NEW_PENALTY = parse_version(sklearn.__version__).release >= (1, 8)


def _l1_ranking(Z, y, l1_decay, seed) -> np.ndarray:
    """Latents by the weight an L1 logistic probe gives them, largest first (ties: lower)."""
    # liblinear minimises ||w||_1 + C sum_i loss_i; SAEBench's loss is mean_i loss_i +
    # l1_decay ||w||_1, so C = 1 / (l1_decay n). Balanced weights average 1 per row.
    # scikit-learn 1.8 replaced penalty="l1" by l1_ratio=1; the package supports both.
    l1 = {"l1_ratio": 1.0} if _NEW_PENALTY else {"penalty": "l1"}
    probe = LogisticRegression(**l1, solver="liblinear", C=1 / (l1_decay * len(y)),
                               class_weight="balanced", random_state=seed).fit(Z, y)
    w = probe.coef_[0]
    return np.lexsort((np.arange(len(w)), -w))


def _k_probe_f1(Z_train, y_train, Z_test, y_test) -> float:
    """Test F1 of SAEBench's k-sparse probe: a balanced logistic regression on k columns."""
    probe = LogisticRegression(max_iter=500, class_weight="balanced").fit(Z_train, y_train)
    return float(f1_score(y_test, probe.predict(Z_test), zero_division=0.0))


def _n_split(f1, f1_jump) -> int:
    """SAEBench's rule: k grows while the F1 beats the best so far by more than f1_jump."""
    best, n = -np.inf, 0
    for k, score in enumerate(f1, start=1):
        if score <= best + f1_jump:
            break
        best, n = score, k
    return n


def _ground_truth_f1(X, is_train, first, letters) -> np.ndarray:
    """Test F1 of a balanced one-vs-rest logistic probe on the activations, per letter."""
    X = X.astype(np.float64)
    X /= max(np.linalg.norm(X, axis=1).mean(), np.finfo(float).tiny)
    out = []
    for letter in letters:
        y = first == letter
        probe = LogisticRegression(class_weight="balanced", max_iter=1000).fit(X[is_train], y[is_train])
        out.append(f1_score(y[~is_train], probe.predict(X[~is_train]), zero_division=0.0))
    return np.asarray(out)


@validate_params(
    {
        "codes": "no_validation",
        "X": ["array-like", None],
        "tokens": ["array-like"],
        "max_k": [Interval(Integral, 1, None, closed="left")],
        "f1_jump": [Interval(Real, 0, None, closed="left")],
        "min_probe_f1": [Interval(Real, 0, 1, closed="both")],
        "min_count": [Interval(Integral, 1, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "l1_decay": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def feature_splitting(codes, X, tokens, *, max_k=10, f1_jump=0.03, min_probe_f1=0.4,
                      min_count=20, cv=5, l1_decay=0.01, random_state=None):
    """How many latents share a first-letter concept: SAEBench's feature splitting.

    Chanin et al. (2024) find that a wide SAE splits "starts with S" over several
    latents; SAEBench counts them with k-sparse probes, and Tree SAE reports the mean as
    *splitting* (``mean_num_split_features``). Here, as there:

    1. **Tokens.** Rows whose token is a whole word after a space (``" short"``, ASCII
       letters), labelled by their first letter; letters with fewer than ``min_count``
       such rows are left out. The words are split once into train and test (the first
       fold of ``StratifiedGroupKFold(cv)``: stratified by letter, grouped by word, so
       test words are unseen); letters without rows on both sides are left out.
    2. **Ranking.** Per letter, an L1-regularised logistic probe on the training codes
       (balanced classes; SAEBench's ``l1_decay`` on the mean loss) ranks the latents by
       their weight, largest first.
    3. **k-sparse probes.** For k = 1..``max_k``, a balanced logistic regression on the
       k best-ranked latents; its F1 on the test rows is ``f1[k - 1]``.
    4. **Rule.** k grows while ``f1[k - 1] > (best F1 so far) + f1_jump``; the letter's
       ``num_split_features`` is the last k that passed (at least 1).

    ``mean_num_split_features`` is the mean over the letters evaluated; when ``X`` is
    known, only letters for which a logistic probe on the activations reaches a test F1
    above ``min_probe_f1`` (SAEBench's ``min_GT_probe_f1``: the model represents the
    letter) are evaluated. 1 means no splitting (one latent carries the letter); SAEBench
    and Tree SAE report the same count (``len(split_feats)``). Unlike SAEBench, the rows
    are tokens in context rather than single-word prompts, and sklearn's liblinear fits
    the L1 probe instead of 50 epochs of Adam.

    Parameters
    ----------
    codes : {array-like, sparse matrix}, list of them, or fitted estimator
        One code matrix of shape (n_tokens, n_latents), a list of levels (side by side),
        or an estimator of the package, whose codes of ``X`` are used.
    X : array-like of shape (n_tokens, n_features) or None
        Token activations: encoded when ``codes`` is an estimator, and always used for
        the ground-truth letter probe; None (only with codes) evaluates every letter.
    tokens : array-like of str of shape (n_tokens,)
        The token string of every row (``" short"``).
    max_k : int, default=10
        Largest k tried (SAEBench's ``max_k_value``).
    f1_jump : float, default=0.03
        F1 gain a further latent must beat (SAEBench's ``f1_jump_threshold``).
    min_probe_f1 : float, default=0.4
        Test F1 the activation probe must exceed for a letter to count.
    min_count : int, default=20
        Rows a letter needs.
    cv : int, default=5
        The test split is one fold in ``cv`` of the words.
    l1_decay : float, default=0.01
        L1 strength of the ranking probe (SAEBench's ``k_sparse_probe_l1_decay``).
    random_state : int, RandomState instance or None, default=None
        Seeds the split of the words and the liblinear solver.

    Returns
    -------
    result : dict
        ``mean_num_split_features`` (float, NaN when no letter is evaluated), and per
        evaluated letter: ``letters``, ``num_split_features`` (ints), ``f1`` (ndarray
        (n_letters, max_k), the k-sparse probes' test F1), ``split_latents`` (list of the
        ``num_split_features`` latents, as columns of the codes side by side) and
        ``probe_f1`` (the activation probe's test F1; NaN without X).

    References
    ----------
    D. Chanin et al. "A is for Absorption", arXiv:2409.14507. A. Karvonen et al.
    "SAEBench", arXiv:2503.09532.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import feature_splitting
    >>> words = [" ant", " arm", " axe", " art", " bee", " bat", " bus", " bin"]
    >>> tokens = np.repeat(words, 10)
    >>> codes = np.zeros((80, 3))
    >>> codes[:40:2, 0] = 1.0; codes[1:40:2, 1] = 1.0  # "a" split over latents 0 and 1
    >>> codes[40:, 2] = 1.0                            # "b" is latent 2 alone
    >>> r = feature_splitting(codes, None, tokens, cv=2, random_state=0)
    >>> r["letters"].tolist(), r["num_split_features"].tolist(), r["mean_num_split_features"]
    (['a', 'b'], [2, 1], 1.5)
    """
    view = tree_view(codes, X)
    Z = view.codes  # (n_tokens, n_latents)
    tokens = np.asarray(tokens, dtype=object)
    if tokens.shape != (Z.shape[0],):
        raise ValueError(f"tokens has shape {tokens.shape}, expected ({Z.shape[0]},): one per row.")
    selected, words, first, letters = _letter_tokens(tokens, min_count, cv)
    rng = check_random_state(random_state)
    folds = StratifiedGroupKFold(cv, shuffle=True, random_state=rng.randint(2**31))
    test = next(folds.split(selected, first, words))[1]
    is_train = np.ones(len(selected), dtype=bool)
    is_train[test] = False
    probe_f1 = np.full(len(letters), np.nan)
    if X is not None:
        X = check_array(X, dtype=np.float64, input_name="X")
        if len(X) != Z.shape[0]:
            raise ValueError(f"X has {len(X)} rows but the codes {Z.shape[0]}.")
        probe_f1 = _ground_truth_f1(X[selected], is_train, first, letters)
    Z = sp.csr_matrix(Z[selected])
    Z_train, Z_test = Z[is_train], Z[~is_train]
    max_k = min(max_k, Z.shape[1])
    seed = rng.randint(2**31)
    rows = []
    for i, letter in enumerate(letters):
        y = first == letter
        if not (y[is_train].any() and y[~is_train].any()) or probe_f1[i] <= min_probe_f1:
            continue  # a NaN probe_f1 (no X) compares False: the letter counts
        ranking = _l1_ranking(Z_train, y[is_train], l1_decay, seed)[:max_k]
        f1 = [_k_probe_f1(Z_train[:, ranking[:k]], y[is_train], Z_test[:, ranking[:k]],
                          y[~is_train]) for k in range(1, max_k + 1)]
        n = _n_split(f1, f1_jump)
        rows.append((letter, n, f1, ranking[:n], probe_f1[i]))
    return {
        "mean_num_split_features": float(np.mean([r[1] for r in rows])) if rows else float("nan"),
        "letters": np.asarray([r[0] for r in rows], dtype=str),
        "num_split_features": np.asarray([r[1] for r in rows], dtype=np.int64),
        "f1": np.asarray([r[2] for r in rows], dtype=np.float64).reshape(len(rows), max_k),
        "split_latents": [r[3] for r in rows],
        "probe_f1": np.asarray([r[4] for r in rows], dtype=np.float64),
    }
