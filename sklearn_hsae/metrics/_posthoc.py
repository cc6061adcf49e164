"""A tree for dictionaries without one: paper 2's post-hoc assignment of children to parents."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._levels import _check_codes
from ._tree import firing, unit_rows

_BLOCK = 4096  # children per block of similarities, to bound memory at (4096, n_parents)


def _coactivation(parents, children) -> np.ndarray:
    """(n_children, n_parents) P(parent active | child active); 0 for silent children."""
    P, C = firing(_check_codes(parents, "parents")), firing(_check_codes(children, "children"))
    if P.shape[0] != C.shape[0]:
        raise ValueError(f"parents codes {P.shape[0]} rows but children {C.shape[0]}; with "
                         "similarity='coactivation' both are codes of the same samples.")
    both = (C.T @ P).toarray()  # (n_children, n_parents) rows where both fire
    counts = np.asarray(C.sum(axis=0)).ravel()
    out = np.zeros_like(both)
    np.divide(both, counts[:, None], out=out, where=counts[:, None] > 0)
    return out


@validate_params(
    {
        "parents": ["array-like", "sparse matrix"],
        "children": ["array-like", "sparse matrix"],
        "similarity": [StrOptions({"decoder", "coactivation"})],
        "unassigned_fraction": [Interval(Real, 0, 1, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def posthoc_tree(parents, children, *, similarity="decoder", unassigned_fraction=0.2):
    """Give any two levels a tree: every child joins its most similar parent (paper 2).

    Paper 2 (Luo et al.) builds the tree of its independently trained baseline
    this way, and re-parents its own model with the same rule: each child takes the parent
    ``argmax_p s(p, c)`` (ties to the lower index); the ``floor(unassigned_fraction *
    n_children)`` children whose best similarity is lowest (ties to the lower index) stay
    unassigned (-1), paper 2's bottom-20 % quantile. Two similarities:

    - ``"decoder"``: ``s(p, c) = cos(d_p, d_c)`` of decoder rows. Paper 2's default is the
      encoder cosine and its Fig. 7 finds the decoder cosine about as good; decoder rows
      exist for every architecture, so this is the default here.
    - ``"coactivation"``: ``s(p, c) = |A_p ∩ A_c| / |A_c| = P(p active | c active)`` on
      the given rows (paper 2's co-activation variant; its square root is Tree SAE's
      binary masked cosine similarity). A child that never fires with any parent stays
      unassigned whatever ``unassigned_fraction`` is.

    Used with codes, the tree favours P(parent | child) on the rows it was built from:
    score :func:`hierarchy_consistency` on other rows.

    Parameters
    ----------
    parents : {array-like, sparse matrix}
        ``"decoder"``: parent decoder rows, shape (n_parents, n_features).
        ``"coactivation"``: parent codes, shape (n_samples, n_parents).
    children : {array-like, sparse matrix}
        The same for the children: rows (n_children, n_features) or codes (n_samples,
        n_children).
    similarity : {"decoder", "coactivation"}, default="decoder"
        What ``parents`` and ``children`` are, and how a child picks its parent.
    unassigned_fraction : float in [0, 1), default=0.2
        Fraction of children, least similar first, left without a parent.

    Returns
    -------
    child_parent : ndarray of shape (n_children,)
        Parent of every child in ``parents``, -1 = unassigned; the form of
        ``child_parent_`` and ``parent_index_by_level_[l]``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.metrics import posthoc_tree
    >>> parents = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> children = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    >>> posthoc_tree(parents, children, unassigned_fraction=1 / 3)
    array([ 0,  1, -1])
    """
    if similarity == "coactivation":
        s = _coactivation(parents, children)  # (n_children, n_parents)
        silent = s.max(axis=1, initial=0.0) == 0
    else:
        P, C = unit_rows(parents), unit_rows(children)
        if P.shape[1] != C.shape[1]:
            raise ValueError(f"parents rows have {P.shape[1]} features but children rows "
                             f"{C.shape[1]}; with similarity='decoder' both are decoder rows.")
        s = np.vstack([C[i : i + _BLOCK] @ P.T for i in range(0, len(C), _BLOCK)])
        silent = np.zeros(len(C), dtype=bool)
    if s.shape[1] == 0:
        raise ValueError("parents is empty: there is no parent to assign.")
    best, arg = s.max(axis=1), s.argmax(axis=1)
    n_out = int(unassigned_fraction * len(best))
    arg[np.argsort(best, kind="stable")[:n_out]] = -1
    arg[silent] = -1
    return arg.astype(np.int64)
