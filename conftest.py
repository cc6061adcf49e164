"""Test-session environment, set before anything imports scipy or transformers."""

import os

# Nothing may reach the network: models and data come from installed wheels.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Lets scikit-learn's check_array_api_input run instead of skipping.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
# OpenMP threads that spin while waiting starve each other on a shared 2-core machine:
# measured here, a small tree step took 0.37 s with spinning threads under load and
# 5 ms with passive ones. Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
