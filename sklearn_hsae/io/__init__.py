"""Save and load fitted estimators without pickle; export a level to SAELens.

A saved model is a directory of two files, the layout Hugging Face, sparsify and
SAELens users know (weights in safetensors, everything else in JSON)::

    path/
      config.json         {"format": "sklearn_hsae", "format_version": 2,
                           "package_version": ..., "estimator": class name,
                           "params": get_params(), "config": {"type": ..., "fields": ...},
                           "fitted": n_features_in_, n_iter_, n_steps_, scale_,
                                     loss_curve_ (and feature_names_in_, l0_ if fitted),
                           "sha256": {tensor: hash}}
      model.safetensors   the model state under its state_dict names (W_enc, b_enc, ...);
                          its metadata holds {"format": "sklearn_hsae",
                          "config_sha256": hash of config.json}

The two files vouch for each other: config.json records the SHA-256 of every tensor and
model.safetensors the SHA-256 of config.json, so a flipped byte anywhere is caught.
A hostile file can recompute the hashes, which is why :func:`load` also checks every
field against what the estimator itself knows before it builds a model. Fitted arrays
derived from the weights (``components_``, ``intercept_``, ...) are not stored:
:func:`load` recomputes them from the checked weights.

Optimizer state (Adam moments) is not stored: these files are for inference and
fine-tuning, not for resuming a run bit for bit (pickle or joblib keep it). After
:func:`load`, ``partial_fit`` continues with a fresh Adam optimizer whose step count
starts at ``n_steps_``.
"""

from ._json import InvalidModelFileError
from ._load import load
from ._saelens import export_saelens
from ._save import save

__all__ = ["InvalidModelFileError", "export_saelens", "load", "save"]
