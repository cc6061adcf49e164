"""The model file format: names, version, and which fitted values a file carries."""

from __future__ import annotations

from .. import HierarchicalSparseAutoencoder, SparseAutoencoder

FORMAT = "sklearn_hsae"
FORMAT_VERSION = 2
"""2: fitted arrays derived from the weights are recomputed on load, not stored.
1 (sklearn_hsae 0.1.0.dev0): stored every fitted array as ``fitted.<name>`` tensors."""
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
# Machine-local parameters a file never carries: where this machine writes checkpoints.
LOCAL_PARAMS = frozenset({"checkpoint_dir"})
ESTIMATORS = {cls.__name__: cls for cls in (HierarchicalSparseAutoencoder, SparseAutoencoder)}
# The fitted values a file stores, each with its type and lower bound: what the estimator
# learned besides the weights. Every other fitted attribute is recomputed from the weights
# on load (``_export_fitted``), so a file cannot hold one that disagrees with them.
BASE_FITTED = {
    "n_features_in_": (int, 1),
    "n_iter_": (int, 0),
    "n_steps_": (int, 0),
    "scale_": (float, 0.0),
    "loss_curve_": (list[float], None),
}
# Stored when the estimator has them: the input's column names, and a training statistic
# (mean active latents per row of every level).
OPTIONAL_FITTED = {"feature_names_in_": list[str], "l0_": list[float]}
