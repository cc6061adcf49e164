"""``export_saelens``: one flat level of a fitted estimator in SAELens' 6.x inference form.

SAELens' TopK SAE (``sae_lens/saes/topk_sae.py``, read from the 6.54 wheel) encodes

    pre = (norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc      # (B, d_sae)
    acts = scatter(TopK_k(pre)).relu()                                     # ReLU after top-k

and decodes ``norm_out(acts @ W_dec + b_dec)``; its JumpReLU SAE (the form SAELens
saves BatchTopK in) keeps ``relu(pre) * (pre > threshold)``. Ours encodes
``pre = (x * scale_ - b_dec) @ W_enc.T + b_enc`` with the same top-k-then-ReLU, so
dividing ``b_enc``, ``b_dec`` and the threshold by ``scale_`` gives ``pre / scale_``:
the same latents, and values in the input's units like our ``encode``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ._files import atomic_write
from ._format import ESTIMATORS

# The cfg.json layout follows SAELens 6.0 (metadata.sae_lens_version >= 6 tells its
# loader not to convert the file from the pre-6 layout).
_SAELENS_FORMAT = "6.0.0"


def export_saelens(estimator, path, level="parent", *, metadata=None) -> None:
    """Write one flat level in the SAELens 6.x on-disk format.

    Writes ``path/cfg.json`` and ``path/sae_weights.safetensors`` with ``W_enc``
    (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,) and,
    for BatchTopK, ``threshold`` (d_sae,), so that ``sae_lens.SAE.load_from_disk(path)``
    reads it. Given raw activations, SAELens then picks the same latents as ``encode``
    and reports the same activation values, in the input's units:

    - ``normalize="global"`` is folded into the weights (``b_enc``, ``b_dec`` and the
      threshold divided by ``scale_``), ``normalize_activations="none"``;
    - ``normalize="unit"`` becomes SAELens' ``"constant_norm_rescale"`` (rows scaled to
      norm sqrt(d_in)) with ``W_enc`` divided and ``W_dec`` multiplied by sqrt(d_in);
      SAELens then reports activations in unit-norm units (ours are multiplied by each
      row's norm), turns all-zero rows into NaN, where we return zeros, and keeps each
      batch's norms from ``encode`` for the following ``decode`` (use ``sae(x)``);
    - TopK exports as architecture ``"topk"``; BatchTopK as ``"jumprelu"`` with every
      threshold equal to ``threshold_``, the form SAELens saves its own BatchTopK SAEs
      in for inference. Matryoshka prefixes only shape training and are dropped.

    Parameters
    ----------
    estimator : HierarchicalSparseAutoencoder or SparseAutoencoder
        A fitted estimator.
    path : str or os.PathLike
        Directory to write; created if missing.
    level : {"parent"}, default="parent"
        The level to export. For :class:`HierarchicalSparseAutoencoder` the parent TopK
        SAE (SAELens then reconstructs from the parents alone); routed children are no
        flat SAE and are refused. For :class:`SparseAutoencoder` "parent" names its one
        level, the whole dictionary.
    metadata : dict or None, default=None
        Extra SAELens metadata, e.g. ``{"model_name": "gpt2", "hook_name":
        "blocks.6.hook_resid_post"}``; JSON values only.

    Raises
    ------
    TypeError
        If ``estimator`` is not one of the package's estimators.
    ValueError
        If the level or the architecture has no SAELens form, or ``metadata`` is not JSON.

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
    if level != "parent":
        raise ValueError(
            f"level={level!r} has no SAELens form; only level='parent' (the flat "
            "TopK level) can be exported: routed children are not a flat SAE."
        )
    cfg, tensors = saelens_export(estimator)
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


def saelens_export(est) -> tuple[dict, dict]:
    """``(cfg, tensors)`` of est's top flat level for ``sae_lens.SAE.load_from_disk``."""
    config = est._config
    if type(config).__name__ not in ("RoutedConfig", "FlatConfig"):
        raise ValueError(f"{type(config).__name__} models have no SAELens export.")
    activation = getattr(config, "activation", "topk")
    state = {k: np.asarray(v, dtype=np.float64) for k, v in est._model_state.items()}
    W_enc = state["W_enc"].T.copy()  # (d_in, d_sae): SAELens multiplies x @ W_enc
    b_enc, W_dec, b_dec = state["b_enc"], state["W_dec"], state["b_dec"]
    threshold = float(state.get("threshold", 0.0))
    d_in, d_sae = W_enc.shape
    normalize_activations = "none"
    if est.normalize == "global":
        # pre / scale_ picks the same top k and reports values in input units.
        b_enc, b_dec, threshold = b_enc / est.scale_, b_dec / est.scale_, threshold / est.scale_
    elif est.normalize == "unit":
        # SAELens rescales rows to norm sqrt(d_in) and divides the output back.
        root = math.sqrt(d_in)
        W_enc, W_dec, b_dec = W_enc / root, W_dec * root, b_dec * root
        normalize_activations = "constant_norm_rescale"
    cfg = {
        "architecture": "topk" if activation == "topk" else "jumprelu",
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
    if activation == "topk":
        cfg.update(k=int(config.k), rescale_acts_by_decoder_norm=False)
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if activation == "batchtopk":
        tensors["threshold"] = np.full(d_sae, threshold)
    dtype = np.dtype(est.dtype)
    return cfg, {k: np.ascontiguousarray(v, dtype=dtype) for k, v in tensors.items()}
