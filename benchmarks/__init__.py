"""Reproducible speed benchmarks of sklearn_hsae against its peer libraries.

Run ``python -m benchmarks.train_speed`` and ``python -m benchmarks.transform_speed``
from the repository root; results go to ``benchmarks/results/``. Peer libraries
(EleutherAI sparsify, SAELens, scikit-learn's MiniBatchDictionaryLearning) are imported
when installed and skipped with a message otherwise.
"""

import os

# Idle OpenMP threads must sleep, not spin: on a shared 2-core machine a spinning pool
# made a small training step 87x slower. libgomp reads this once, when torch loads, so
# it is set here, before any benchmark module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
