"""The SAEBench sparse-probing protocol for an estimator of the package."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from sklearn.utils.validation import check_array, column_or_1d
from tqdm.auto import tqdm

from ..metrics import code_levels, level_names
from ._selector import make_sparse_probe
@dataclass(frozen=True)
class SparseProbeScores:
    """Test accuracies of sparse probes: one row per feature set, one column per k.

    Index with ``scores[row, k]`` (``k="all"`` for the probe on every column); ``str``
    gives a text table and ``to_dict()`` columns that ``pandas.DataFrame`` accepts.

    Attributes
    ----------
    ks : tuple of int
        The k values, one column each.
    rows : tuple of str
        ``"activations"`` (the raw activations X) first, then the code sets.
    accuracy : ndarray of shape (len(rows), len(ks) + 1)
        Test accuracy; the last column is a probe on every column of the set (for
        ``"activations"``, the raw-activation baseline).
    selected : dict of str to tuple of ndarray
        For every row, the columns each top-k probe used, highest score first.
    chance : float
        Test accuracy of always predicting the majority class of the training split.
    n_train, n_test : int
        Rows in the two splits.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.probing import SparseProbeScores
    >>> scores = SparseProbeScores(ks=(1, 5), rows=("activations", "parent"),
    ...                            accuracy=np.array([[0.71, 0.86, 0.99], [0.93, 0.95, 0.96]]),
    ...                            selected={}, chance=0.5, n_train=800, n_test=200)
    >>> scores["parent", 1], scores["activations", "all"]
    (0.93, 0.99)
    >>> print(scores)
    features        k=1     k=5     all
    activations   0.710   0.860   0.990
    parent        0.930   0.950   0.960
    (test accuracy on 200 rows; majority class 0.500)
    """

    ks: tuple
    rows: tuple
    accuracy: np.ndarray
    selected: dict
    chance: float
    n_train: int
    n_test: int

    def __getitem__(self, key):
        row, k = key
        if row not in self.rows:
            raise KeyError(f"No row {row!r}; rows are {list(self.rows)}.")
        if k != "all" and k not in self.ks:
            raise KeyError(f"No k={k!r}; ks are {list(self.ks)} and 'all'.")
        column = len(self.ks) if k == "all" else self.ks.index(k)
        return float(self.accuracy[self.rows.index(row), column])

    def to_dict(self) -> dict:
        """Columns of the table: ``features``, then ``k=...`` and ``all`` accuracies."""
        table = {"features": list(self.rows)}
        for j, name in enumerate([f"k={k}" for k in self.ks] + ["all"]):
            table[name] = self.accuracy[:, j].tolist()
        return table

    def __str__(self) -> str:
        header = ["features"] + [f"k={k}" for k in self.ks] + ["all"]
        width = max(len(r) for r in (*self.rows, "features"))
        lines = [f"{header[0]:<{width}}" + "".join(f"{h:>8}" for h in header[1:])]
        for name, accuracy in zip(self.rows, self.accuracy):
            lines.append(f"{name:<{width}}" + "".join(f"{a:8.3f}" for a in accuracy))
        lines.append(f"(test accuracy on {self.n_test} rows; majority class {self.chance:.3f})")
        return "\n".join(lines)


_CODES_ERROR = "codes must be 'parent', 'child', 'all', 'levels' or a level index, got {codes!r}."


def _code_sets(levels: list, codes) -> dict:
    """Name -> code matrix for the requested ``codes`` option."""
    names = level_names(len(levels))
    if codes == "all":
        return {"codes": sp.hstack(levels, format="csr")}
    if codes == "levels":
        return dict(zip(names, levels))
    if isinstance(codes, Integral) and not isinstance(codes, bool):
        if not -len(levels) <= codes < len(levels):
            raise ValueError(f"codes={codes} is out of range for {len(levels)} level(s).")
        return {names[codes]: levels[codes]}
    if codes in ("parent", "child"):
        if len(levels) < 2:
            raise ValueError(
                f"codes={codes!r} needs a hierarchical estimator; this one has a single "
                "level of codes: use codes='all'."
            )
        if codes == "parent":
            return {"parent": levels[0]}
        return {"child": sp.hstack(levels[1:], format="csr")}
    raise ValueError(_CODES_ERROR.format(codes=codes))


def _split(y, test_size, groups, random_state):
    rows = np.arange(len(y))
    if groups is None:
        return train_test_split(rows, test_size=test_size, stratify=y, random_state=random_state)
    groups = column_or_1d(groups)
    if len(groups) != len(y):
        raise ValueError(f"groups has {len(groups)} entries but y has {len(y)}.")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=random_state)
    train, test = next(splitter.split(rows, y, groups))
    for name, part in (("training", train), ("test", test)):
        if len(np.unique(y[part])) < 2:
            raise ValueError(
                f"The grouped {name} split holds a single class; use more groups or "
                "another random_state."
            )
    return train, test


def _probe_set(Z, y, train, test, ks, logistic: dict, bar):
    """Test accuracy of every top-k probe, then of one on all columns; the columns used."""
    Z_train, Z_test = Z[train], Z[test]  # row selection copies: once per set, not per k
    accuracy, picks = [], []
    for k in ks:
        probe = make_sparse_probe(min(k, Z.shape[1]), **logistic).fit(Z_train, y[train])
        accuracy.append(probe.score(Z_test, y[test]))
        picks.append(probe[0].selected_)
        bar.update()
    full = LogisticRegression(**logistic).fit(Z_train, y[train])
    accuracy.append(full.score(Z_test, y[test]))
    bar.update()
    return accuracy, tuple(picks)


def sparse_probe_scores(
    estimator,
    X,
    y,
    ks=(1, 2, 5, 20),
    *,
    codes="parent",
    test_size=0.2,
    groups=None,
    random_state=None,
    C=1.0,
    max_iter=1000,
    verbose=0,
):
    """Held-out accuracy of k-sparse probes on an estimator's codes and on raw X.

    X is encoded once and split once (stratified by y; by ``groups`` when given, so e.g.
    all tokens of a document land on one side). For every code set and every k, a
    :func:`make_sparse_probe` is fitted on the training rows and scored on the test rows;
    the same is done on X itself, and a logistic regression on all columns of each set
    gives the ``"all"`` column.

    Parameters
    ----------
    estimator : fitted estimator of sklearn_hsae
        Any estimator of the package.
    X : array-like of shape (n_samples, n_features)
        Activations, one row per example.
    y : array-like of shape (n_samples,)
        Class labels (binary in SAEBench; see :class:`SparseProbeSelector` for more).
    ks : sequence of int, default=(1, 2, 5, 20)
        Numbers of latents; a k above a set's width uses all its columns.
    codes : {"parent", "child", "all", "levels"} or int, default="parent"
        Which codes to probe: the coarsest level, every level below it (side by side),
        all levels side by side (``transform(X)``), each level separately, or one level
        by index. ``"parent"`` and ``"child"`` need a hierarchical estimator.
    test_size : float, default=0.2
        Fraction of rows (of groups, with ``groups``) held out.
    groups : array-like of shape (n_samples,), default=None
        Group labels for a grouped split, e.g. the document of every token.
    random_state : int, RandomState instance or None, default=None
        Seeds the split and the probes.
    C, max_iter
        Passed to every logistic regression.
    verbose : int, default=0
        0 runs silently; 1 or more shows a progress bar (rate and time left) on stderr,
        one step per fitted probe (``len(ks) + 1`` per feature set).

    Returns
    -------
    scores : SparseProbeScores
        Test accuracies; ``scores["parent", 1]`` is the 1-sparse probe on parent codes and
        ``scores["activations", "all"]`` the raw-activation probe.

    Examples
    --------
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.probing import sparse_probe_scores
    >>> X, *_, parent_codes, _ = make_hierarchical_activations(
    ...     n_samples=600, random_state=0, return_codes=True)
    >>> y = (parent_codes[:, 0].toarray().ravel() > 0).astype(int)  # is true parent 0 on?
    >>> hsae = HierarchicalSparseAutoencoder(n_parents=24, n_children=4, subspace_dim=3, k=3,
    ...                                      max_iter=3, random_state=0).fit(X)
    >>> scores = sparse_probe_scores(hsae, X, y, ks=(1, 5), random_state=0)
    >>> scores.rows
    ('activations', 'parent')
    >>> scores["activations", "all"] > 0.9
    True
    """
    y = column_or_1d(y, warn=True)
    X = check_array(X, dtype=(np.float64, np.float32), input_name="X")  # float32 stays float32
    if len(y) != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} labels.")
    if not (isinstance(codes, Integral) or codes in ("parent", "child", "all", "levels")):
        raise ValueError(_CODES_ERROR.format(codes=codes))  # before a possibly long encode
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}.")
    if not isinstance(verbose, Integral) or verbose < 0:
        raise ValueError(f"verbose must be a non-negative int, got {verbose!r}.")
    levels = code_levels(estimator, X)
    sets = {"activations": X, **_code_sets(levels, codes)}
    train, test = _split(y, test_size, groups, random_state)
    logistic = dict(C=C, max_iter=max_iter, random_state=random_state)
    results = {}
    with tqdm(total=len(sets) * (len(ks) + 1), desc="probes", unit="probe",
              disable=not verbose, leave=False) as bar:
        for name, Z in sets.items():
            bar.set_postfix_str(name)
            results[name] = _probe_set(Z, y, train, test, ks, logistic, bar)
    accuracy = np.array([row for row, _ in results.values()])
    selected = {name: picks for name, (_, picks) in results.items()}
    values, counts = np.unique(y[train], return_counts=True)
    chance = float(np.mean(y[test] == values[np.argmax(counts)]))
    return SparseProbeScores(ks, tuple(sets), accuracy, selected, chance, len(train), len(test))
