"""One flat level of a fitted estimator in SAELens' 6.x inference form (numpy only).

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

import math

import numpy as np

# The cfg.json layout follows SAELens 6.0 (metadata.sae_lens_version >= 6 tells its
# loader not to convert the file from the pre-6 layout).
_SAELENS_FORMAT = "6.0.0"


def saelens_export(est, package_version: str) -> tuple[dict, dict]:
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
            "exported_by": f"sklearn_hsae {package_version}",
        },
    }
    if activation == "topk":
        cfg.update(k=int(config.k), rescale_acts_by_decoder_norm=False)
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if activation == "batchtopk":
        tensors["threshold"] = np.full(d_sae, threshold)
    dtype = np.dtype(est.dtype)
    return cfg, {k: np.ascontiguousarray(v, dtype=dtype) for k, v in tensors.items()}
