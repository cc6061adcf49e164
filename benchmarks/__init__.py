"""Reproducible speed benchmarks of sklearn_hsae against its peer libraries.

Run ``python -m benchmarks.train_speed`` and ``python -m benchmarks.transform_speed``
from the repository root; results go to ``benchmarks/results/``. Peer libraries
(EleutherAI sparsify, SAELens, scikit-learn's MiniBatchDictionaryLearning) are imported
when installed and skipped with a message otherwise.
"""


# The benchmarks run under the OpenMP settings they are started with (each report
# records OMP_WAIT_POLICY): the library chooses its own thread count for small steps
# (``threads_for``), and what a user gets without any variable set is what matters.
# An earlier default of PASSIVE made every parallel region pay a wake-up: routed 256x16
# and flat TopK 2048 steps at B = 1024 took 41.0 and 52.7 ms under it against 28.6 and
# 40.4 ms unset (in-process, idle machine).
