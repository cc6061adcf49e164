"""Test-session environment, set before anything imports scipy or transformers."""

import os

# Nothing may reach the network: models and data come from installed wheels.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Lets scikit-learn's check_array_api_input run instead of skipping.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
