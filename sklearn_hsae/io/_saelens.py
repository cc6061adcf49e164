"""``export_saelens``: one flat level of a fitted estimator in SAELens' 6.x inference form.

SAELens' TopK SAE (``sae_lens/saes/topk_sae.py``, read from the 6.54 wheel) encodes

    pre = (norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc      # (B, d_sae)
    acts = scatter(TopK_k(pre)).relu()                                     # ReLU after top-k

and decodes ``norm_out(acts @ W_dec + b_dec)``; its JumpReLU SAE keeps
``relu(pre) * (pre > threshold)``. Every flat level here encodes
``pre = (x * scale_ - b_dec) @ W_enc.T + b_enc`` with the same top-k-then-ReLU (or, for
BatchTopK and the tree's ``sparsity="l0"``, the same JumpReLU), so dividing ``b_enc``,
``b_dec`` and the threshold by ``scale_`` gives ``pre / scale_``: the same latents, and
values in the input's units like our ``encode``.
"""

from __future__ import annotations

import json
import math
from numbers import Integral
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from .._training.checkpoint import atomic_write
from ._format import ESTIMATORS

# The cfg.json layout follows SAELens 6.0 (metadata.sae_lens_version >= 6 tells its
# loader not to convert the file from the pre-6 layout).
_SAELENS_FORMAT = "6.0.0"
_LEVEL_NAMES = {"parent": 0, "child": 1}
_ROUTED_CHILDREN = (
    "the routed children are not a flat SAE: each child lives in its parent's private "
    "subspace and is active only under that parent"
)
_NESTED_LEVELS = (
    "a nested (Tree SAE) level below the first picks its features only among those whose "
    "parent fired in the row, so it is not a flat SAE"
)


def export_saelens(estimator, path, level="parent", *, metadata=None) -> None:
    """Write one flat level in the SAELens 6.x on-disk format.

    Writes ``path/cfg.json`` and ``path/sae_weights.safetensors`` with ``W_enc``
    (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,) and,
    for a JumpReLU form, ``threshold`` (d_sae,), so that
    ``sae_lens.SAE.load_from_disk(path)`` reads it. Given raw activations, SAELens then
    picks the same latents as ``encode`` (``encode(X).levels[level]``) and reports the
    same activation values, in the input's units:

    - ``normalize="global"`` is folded into the weights (``b_enc``, ``b_dec`` and the
      threshold divided by ``scale_``), ``normalize_activations="none"``;
    - ``normalize="unit"`` becomes SAELens' ``"constant_norm_rescale"`` (rows scaled to
      norm sqrt(d_in)) with ``W_enc`` divided and ``W_dec`` multiplied by sqrt(d_in);
      SAELens then reports activations in unit-norm units (ours are multiplied by each
      row's norm), turns all-zero rows into NaN, where we return zeros, and keeps each
      batch's norms from ``encode`` for the following ``decode`` (use ``sae(x)``);
    - TopK exports as architecture ``"topk"``; BatchTopK as ``"jumprelu"`` with every
      threshold equal to ``threshold_``, the form SAELens saves its own BatchTopK SAEs
      in for inference; a tree level with ``sparsity="l0"`` as ``"jumprelu"`` with its
      learned per-latent thresholds. Matryoshka prefixes only shape training and are
      dropped.

    Parameters
    ----------
    estimator : HierarchicalSparseAutoencoder or SparseAutoencoder
        A fitted estimator.
    path : str or os.PathLike
        Directory to write; created if missing.
    level : int or {"parent", "child"}, default="parent"
        The level to export, coarsest first: ``"parent"`` is level 0 and ``"child"``
        level 1. Every level of ``architecture="tree"`` is a full SAE that reconstructs
        on its own, and any of them can be exported. Of ``architecture="routed"`` only
        the parent TopK SAE can (SAELens then reconstructs from the parents alone): the
        routed children live in their parents' private subspaces and are no flat SAE.
        A :class:`SparseAutoencoder` has one level, the whole dictionary.
    metadata : dict or None, default=None
        Extra SAELens metadata, e.g. ``{"model_name": "gpt2", "hook_name":
        "blocks.6.hook_resid_post"}``; JSON values only.

    Raises
    ------
    TypeError
        If ``estimator`` is not one of the package's estimators.
    ValueError
        If ``level`` is not a level of the estimator or has no SAELens form, or
        ``metadata`` is not JSON.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from sklearn_hsae import HierarchicalSparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.io import export_saelens
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> hsae = HierarchicalSparseAutoencoder(
    ...     n_parents=16, n_children=4, subspace_dim=2, k=3, max_iter=1, random_state=0
    ... ).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     export_saelens(hsae, tmp, metadata={"hook_name": "blocks.6.hook_resid_post"})
    ...     cfg = json.loads(Path(tmp, "cfg.json").read_text())
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ['cfg.json', 'sae_weights.safetensors']
    >>> cfg["architecture"], cfg["k"], cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]
    ('topk', 3, 64, 16, 'none')
    """
    if ESTIMATORS.get(type(estimator).__name__) is not type(estimator):
        raise TypeError(f"export_saelens() exports {sorted(ESTIMATORS)}, got {type(estimator)}.")
    check_is_fitted(estimator)
    cfg, tensors = saelens_level(estimator, level_index(estimator, level))
    try:  # a copy that is surely JSON (SAELens keeps e.g. model_from_pretrained_kwargs here)
        extra = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must hold JSON values only: {exc}") from None
    cfg["metadata"] = {**cfg["metadata"], **extra}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "sae_weights.safetensors", lambda tmp: save_file(tensors, tmp))
    cfg_bytes = json.dumps(cfg, indent=1, allow_nan=False).encode("utf-8")
    atomic_write(path / "cfg.json", lambda tmp: Path(tmp).write_bytes(cfg_bytes))


def _state_prefix(est, level: int) -> str | None:
    """Where level ``level``'s full SAE (W_enc, b_enc, W_dec, b_dec) lives in the model
    state, or None if that level is no flat SAE.

    A tree stores one per level as ``levels.{i}.*``; flat and routed models store their
    top level's unprefixed.
    """
    state = est._model_state
    if getattr(est, "architecture", None) == "nested" and level > 0:
        return None  # gated by the level above (its first level is a plain TopK SAE)
    if f"levels.{level}.W_enc" in state:
        return f"levels.{level}."
    return "" if level == 0 and "W_enc" in state else None


def level_index(est, level) -> int:
    """``level`` as the index of an exportable level; a ValueError names the valid ones."""
    n_levels = getattr(est, "n_levels", 1)  # a SparseAutoencoder has one level
    names = {name: i for name, i in _LEVEL_NAMES.items() if i < n_levels}
    flat = [i for i in range(n_levels) if _state_prefix(est, i) is not None]
    aliases = {i: name for name, i in names.items()}
    valid = ", ".join(f"{i} (or {aliases[i]!r})" if i in aliases else str(i) for i in flat)
    if isinstance(level, str) and level in names:
        index = names[level]
    elif isinstance(level, Integral) and not isinstance(level, bool) and 0 <= level < n_levels:
        index = int(level)
    else:
        raise ValueError(
            f"level={level!r} is not a level of this {type(est).__name__}; the levels "
            f"with a SAELens form are {valid}."
        )
    if index not in flat:
        architecture = getattr(est, "architecture", None)
        reason = {"routed": _ROUTED_CHILDREN, "nested": _NESTED_LEVELS}.get(
            architecture, "this level is not a flat SAE")
        raise ValueError(
            f"level={level!r} has no SAELens form: {reason}. The levels with a SAELens "
            f"form are {valid}."
        )
    return index


def saelens_level(est, level: int) -> tuple[dict, dict]:
    """``(cfg, tensors)`` of est's flat level ``level`` for ``sae_lens.SAE.load_from_disk``."""
    prefix = _state_prefix(est, level)
    names = ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "threshold")
    model_state = est._model_state  # one copy (a live trainer's weights are copied per read)
    state = {  # this level's SAE (and a flat model's scalar threshold), in float64
        name: np.asarray(model_state[prefix + name], dtype=np.float64)
        for name in names
        if prefix + name in model_state
    }
    if "b_dec" not in state:  # nested levels share one decoder bias, stored unprefixed
        state["b_dec"] = np.asarray(model_state["b_dec"], dtype=np.float64)
    W_enc = state["W_enc"].T.copy()  # (d_in, d_sae): SAELens multiplies x @ W_enc
    b_enc, W_dec, b_dec = state["b_enc"], state["W_dec"], state["b_dec"]
    threshold = _threshold(est, state)
    d_in, d_sae = W_enc.shape
    normalize_activations = "none"
    if est.normalize == "global":
        # pre / scale_ picks the same latents and reports values in input units.
        b_enc, b_dec = b_enc / est.scale_, b_dec / est.scale_
        threshold = None if threshold is None else threshold / est.scale_
    elif est.normalize == "unit":
        # SAELens rescales rows to norm sqrt(d_in) and divides the output back.
        root = math.sqrt(d_in)
        W_enc, W_dec, b_dec = W_enc / root, W_dec * root, b_dec * root
        normalize_activations = "constant_norm_rescale"
    cfg = {
        "architecture": "topk" if threshold is None else "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": est.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": normalize_activations,
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": _SAELENS_FORMAT,
            "exported_by": f"sklearn_hsae {__version__}",
        },
    }
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if threshold is None:
        cfg.update(k=int(est._config.k), rescale_acts_by_decoder_norm=False)
    else:
        tensors["threshold"] = threshold
    dtype = np.dtype(est.dtype)
    return cfg, {k: np.ascontiguousarray(v, dtype=dtype) for k, v in tensors.items()}


def _threshold(est, state: dict) -> np.ndarray | None:
    """The (d_sae,) JumpReLU threshold of a level in scaled units, or None for TopK."""
    if "log_threshold" in state:  # a tree level with sparsity="l0": learned, per latent
        return np.exp(state["log_threshold"])
    if getattr(est._config, "activation", "topk") == "batchtopk":
        # BatchTopK infers with one global threshold, threshold_ (in scaled units here).
        return np.full(state["b_enc"].shape, float(state["threshold"]))
    return None
