"""Small models on shared cores: per-fit overhead against a plain torch loop, and the
slowdown when two busy loops hold the machine's two cores.

Every measurement is a fresh Python process with no OMP_* variable set (as a user's
would be), so the first-fit import cost and the OpenMP wait policy are what a user
meets. The load is two plain ``while True`` loops in other processes. Reports ratios
measured in the same run (``benchmarks/results/small_fit.{json,md}``)::

    python -m benchmarks.small_fit [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

FIT = """
import time, sys
t0 = time.perf_counter()
from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
X, *_ = make_hierarchical_activations(n_samples=20_000, n_features=64, n_parents=24, n_children=4,
                                      random_state=0)
t1 = time.perf_counter()
HierarchicalSparseAutoencoder(n_parents=24, n_children=4, subspace_dim=3, k=3, max_iter={epochs},
                              batch_size=512, random_state=0).fit(X)
print(time.perf_counter() - t1)
"""

# The same steps as a plain TopK SAE of the H-SAE's width (24 * (1 + 4) = 120 atoms, k = 6
# active: 3 parents + 3 children), written as a user would in 20 lines of torch.
PLAIN = """
import time, torch
from sklearn_hsae.datasets import make_hierarchical_activations
X, *_ = make_hierarchical_activations(n_samples=20_000, n_features=64, n_parents=24, n_children=4,
                                      random_state=0)
t1 = time.perf_counter()
X = torch.tensor(X, dtype=torch.float32)
g = torch.Generator().manual_seed(0)
W_dec = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(120, 64, generator=g), dim=1))
W_enc = torch.nn.Parameter(W_dec.detach().clone())
b_enc = torch.nn.Parameter(torch.zeros(120)); b_dec = torch.nn.Parameter(X[:4096].mean(0))
opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=5e-3)
for epoch in range({epochs}):
    for idx in torch.randperm(len(X), generator=g).split(512):
        x = X[idx]
        pre = torch.relu((x - b_dec) @ W_enc.T + b_enc)
        vals, ids = pre.topk(6, dim=1)
        z = torch.zeros_like(pre).scatter(1, ids, vals)
        loss = ((z @ W_dec + b_dec - x) ** 2).sum(1).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
print(time.perf_counter() - t1)
"""

FIRST = """
import time
from sklearn_hsae import SparseAutoencoder
import numpy as np
X = np.random.RandomState(0).randn(3000, 64)
t1 = time.perf_counter()
SparseAutoencoder(n_components=64, k=4, max_iter=1, random_state=0).fit(X)
print(time.perf_counter() - t1)
"""


def _run(code: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _busy_loops(n: int = 2):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (default: 3)")
    args = parser.parse_args(argv)
    r = args.repeats
    figures = {"load_before": os.getloadavg()[0]}
    figures["first_fit_s"] = [_run(FIRST) for _ in range(r)]
    figures["fit80_s"], figures["plain80_s"] = [], []
    for _ in range(r):  # interleaved, so drifting load hits both alike
        figures["fit80_s"].append(_run(FIT.format(epochs=80)))
        figures["plain80_s"].append(_run(PLAIN.format(epochs=80)))
    figures["fit10_idle_s"] = [_run(FIT.format(epochs=10)) for _ in range(r)]
    loops = _busy_loops()
    try:
        time.sleep(1.0)
        figures["fit10_loaded_s"] = [_run(FIT.format(epochs=10)) for _ in range(r)]
    finally:
        for p in loops:
            p.kill()
    med = {k: statistics.median(v) for k, v in figures.items() if isinstance(v, list)}
    figures["ratio_fit80_over_plain80"] = med["fit80_s"] / med["plain80_s"]
    figures["ratio_loaded_over_idle"] = med["fit10_loaded_s"] / med["fit10_idle_s"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small_fit.json").write_text(json.dumps(figures, indent=1))
    lines = [
        "# Small models on shared cores (`python -m benchmarks.small_fit`)",
        "",
        f"Fresh process per figure, no OMP_* variable set; {r} runs each (median; all runs in the json).",
        f"Load average before the run: {figures['load_before']:.2f}.",
        "",
        "| figure | seconds (median) | runs |",
        "|---|---:|---|",
    ]
    for key in ("first_fit_s", "fit80_s", "plain80_s", "fit10_idle_s", "fit10_loaded_s"):
        lines.append(f"| {key} | {med[key]:.2f} | {', '.join(f'{v:.2f}' for v in figures[key])} |")
    lines += [
        "",
        f"- 80-epoch fit / plain torch loop: **{figures['ratio_fit80_over_plain80']:.2f}x**",
        f"- 10-epoch fit with two busy loops / idle: **{figures['ratio_loaded_over_idle']:.2f}x** (fair share: 2x)",
    ]
    (RESULTS / "small_fit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return figures


if __name__ == "__main__":
    main()
