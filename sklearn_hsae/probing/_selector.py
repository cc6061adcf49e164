"""The ranking step of SAEBench's sparse probing as a scikit-learn feature selector, and
the whole probe as a Pipeline."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data


class SparseProbeSelector(SelectorMixin, BaseEstimator):
    """Keep the k columns whose class means differ most (SAEBench's top-k latents).

    For a binary target, every column j is scored by ``|mean(X[y == b, j]) - mean(X[y ==
    a, j])|`` on the rows seen in ``fit``, and the k best are kept (ties go to the lower
    index). For more than two classes the score is the largest one-vs-rest difference,
    ``max_c |mean(X[y == c, j]) - mean(X[y != c, j])|``, so a column that singles out any
    one class is kept; SAEBench itself only probes binary tasks.

    Parameters
    ----------
    k : int, default=5
        Number of columns to keep. A k above the number of columns keeps them all, with
        a warning.

    Attributes
    ----------
    scores_ : ndarray of shape (`n_features_in_`,)
        Absolute difference of class means of every column.
    selected_ : ndarray of shape (`min(k, n_features_in_)`,)
        Indices of the kept columns, highest score first.
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in ``fit``.
    n_features_in_ : int
        Number of columns seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names seen in ``fit``, when X has string column names.

    See Also
    --------
    make_sparse_probe : This selector followed by a logistic regression.
    sklearn.feature_selection.SelectKBest : Univariate selection with other scores.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.probing import SparseProbeSelector
    >>> X = np.array([[0.0, 1.0, 0.2], [0.0, 1.1, 0.0], [3.0, 0.9, 0.1], [2.0, 1.0, 0.0]])
    >>> y = np.array([0, 0, 1, 1])
    >>> selector = SparseProbeSelector(k=1).fit(X, y)
    >>> selector.selected_, selector.transform(X).ravel()
    (array([0]), array([0., 0., 3., 2.]))
    """

    _parameter_constraints: dict = {"k": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, k=5):
        self.k = k

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Score every column on (X, y) and keep the k best.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Codes (or any features), dense or sparse.
        y : array-like of shape (n_samples,)
            Class labels, at least two distinct ones.

        Returns
        -------
        self : object
            The fitted selector.
        """
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc", "coo"))
        kind = type_of_target(y, input_name="y", raise_unknown=True)
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"SparseProbeSelector needs class labels, got a {kind} target; "
                "bin a continuous target into classes first."
            )
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class ({self.classes_[0]}); probing needs two or more.")
        self.scores_ = self._mean_differences(X, y_index)
        k = self.k
        if k > X.shape[1]:
            warnings.warn(
                f"k={k} is larger than the {X.shape[1]} columns of X; keeping all of them.",
                UserWarning,
            )
            k = X.shape[1]
        self.selected_ = np.argsort(-self.scores_, kind="stable")[:k]
        return self

    def _mean_differences(self, X, y_index: np.ndarray) -> np.ndarray:
        n, n_classes = X.shape[0], len(self.classes_)
        onehot = sp.csr_matrix(
            (np.ones(n), (y_index, np.arange(n))), shape=(n_classes, n)
        )  # (c, n)
        sums = onehot @ X  # (c, d) column sums per class, sparse or dense like X
        sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums, dtype=np.float64)
        counts = np.bincount(y_index, minlength=n_classes)[:, None]  # (c, 1)
        inside = sums / counts
        outside = (sums.sum(axis=0) - sums) / (n - counts)  # mean over the other classes
        return np.abs(inside - outside).max(axis=0)  # (d,); both rows agree when binary

    def _get_support_mask(self):
        check_is_fitted(self)
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags


def make_sparse_probe(k=5, *, C=1.0, max_iter=1000, random_state=None):
    """A k-sparse probe: :class:`SparseProbeSelector` then logistic regression.

    The logistic regression uses SAEBench's settings (L2 penalty, ``C=1``,
    ``max_iter=1000``); tune k with ``GridSearchCV(probe, {"sparseprobeselector__k":
    [...]})``.

    Parameters
    ----------
    k : int, default=5
        Columns the probe may use.
    C : float, default=1.0
        Inverse L2 regularisation strength of the logistic regression.
    max_iter : int, default=1000
        Iterations of the logistic regression solver.
    random_state : int, RandomState instance or None, default=None
        Passed to the logistic regression.

    Returns
    -------
    probe : sklearn.pipeline.Pipeline
        Steps ``"sparseprobeselector"`` and ``"logisticregression"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.probing import make_sparse_probe
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 30)); y = (X[:, 7] > 0.5).astype(int)
    >>> probe = make_sparse_probe(k=1).fit(X, y)
    >>> probe[0].selected_, probe.score(X, y) > 0.9
    (array([7]), True)
    """
    return make_pipeline(
        SparseProbeSelector(k=k),
        LogisticRegression(C=C, max_iter=max_iter, random_state=random_state),
    )


