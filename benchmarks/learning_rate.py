"""The automatic learning rate of multi-level models: one rate per level, or one for all.

Run from the repository root::

    python -m benchmarks.learning_rate [--max-iter 5] [--skip-smollm2]

``learning_rate="auto"`` gives every level of a tree (``architecture="tree"`` or
``"nested"``) the rate a flat SAE of that level's width gets,
``min(5e-3, 8e-4 / sqrt(width / 2**14))``. Before 2026-12-01 every level took the rate
of the first level's width. This benchmark fits both, side by side with flat TopK
dictionaries of the finest level's width at both rates, on the same rows:

- synthetic: ``make_hierarchical_activations`` with 128 parents x 8 children in 256
  features (4 active parents a row), trees 128 -> 1024, k=4 per level (nested: k=4 in
  each cumulative level), 20 epochs of batch 512, two seeds; held-out EV of every
  level and recovery (:func:`sklearn_hsae.metrics.tree_recovery`, |cos| >= 0.8);
- SmolLM2 layer 15 (``fetch_text_activations``, whole texts held out as
  ``benchmarks/realdata.py``): trees 512 -> 4096 at L0 32 (tree: k=32 per level;
  nested: k=16 in each of its two cumulative levels), flat TopK 4096 with k=32,
  ``--max-iter`` epochs of batch 1024; held-out EV of every level.

Writes ``benchmarks/results/learning_rate.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._config import auto_learning_rate
from sklearn_hsae.datasets import fetch_text_activations, make_hierarchical_activations
from benchmarks.recovery import hierarchical_recovery
from sklearn_hsae.metrics import fvu

RESULTS = Path(__file__).parent / "results"


def _level_ev(est, X) -> list[float]:
    """Held-out EV of every level's own reconstruction (cumulative for nested)."""
    Z = est.transform(X)
    return [round(1 - float(fvu(X, est.inverse_transform(Z, level=level))), 4)
            for level in range(len(est.components_by_level_))]


def _pairs(P: int, C: int, k: int, common: dict) -> dict:
    """Each design at the per-level rule ("auto") and at the old one-rate rule."""
    old = auto_learning_rate(P)
    width = P * C
    out = {}
    for arch, arch_k in (("tree", k), ("nested", max(1, k // 2))):
        for rule, lr in (("per level (auto)", "auto"), (f"one rate, {old:.2g}", old)):
            out[f"{arch} {P}->{width}, {rule}"] = HierarchicalSparseAutoencoder(
                architecture=arch, n_parents=P, n_children=C, k=arch_k, learning_rate=lr, **common)
    for rule, lr in ((f"auto, {auto_learning_rate(width):.2g}", "auto"), (f"{old:.2g}", old)):
        out[f"flat TopK {width}, {rule}"] = SparseAutoencoder(n_components=width, k=k, learning_rate=lr,
                                                             **common)
    return out


def _recovery(est, parents, children, child_parent) -> dict:
    """Parents and children recovered at |cos| >= 0.8; a tree level's child truth is
    parent + child (what a level that reconstructs alone sees), nested's the child."""
    if isinstance(est, SparseAutoencoder):
        sums = parents[child_parent] + children
        sums /= np.linalg.norm(sums, axis=1, keepdims=True)
        return {"parent_recovered": round(float(np.mean(np.abs(parents @ est.components_.T).max(1) >= 0.8)), 4),
                "child_recovered": round(float(np.mean(np.abs(sums @ est.components_.T).max(1) >= 0.8)), 4)}
    return hierarchical_recovery(est, parents, children, child_parent)


def synthetic(seeds, max_iter: int) -> list[dict]:
    rows = []
    for seed in seeds:
        X, parents, children, child_parent = make_hierarchical_activations(
            n_samples=24_000, n_features=256, n_parents=128, n_children=8, subspace_dim=7,
            n_active=4, random_state=seed)[:4]
        train, test = X[:20_000], X[20_000:]
        common = dict(max_iter=max_iter, batch_size=512, random_state=seed)
        for name, est in _pairs(128, 8, 4, common).items():
            start = time.perf_counter()
            est.fit(train)
            fit_s = time.perf_counter() - start
            rows.append({"data": "synthetic", "seed": seed, "model": name,
                         "ev_by_level": _level_ev(est, test), **_recovery(est, parents, children, child_parent),
                         "fit_seconds": round(fit_s, 1)})
            print(rows[-1], flush=True)
    return rows


def smollm2(max_iter: int, data_home=None) -> list[dict]:
    from benchmarks.realdata import _held_out_split

    data = fetch_text_activations(data_home, layer=15)
    _, train, test = _held_out_split(data, 300, seed=0)
    common = dict(max_iter=max_iter, batch_size=1024, random_state=0)
    rows = []
    for name, est in _pairs(512, 8, 32, common).items():
        start = time.perf_counter()
        est.fit(data.X[train])
        fit_s = time.perf_counter() - start
        rows.append({"data": "SmolLM2 L15", "seed": 0, "model": name, "ev_by_level": _level_ev(est, data.X[test]),
                     "l0_by_level": [round(v, 2) for v in est.l0_], "n_steps": est.n_steps_,
                     "fit_seconds": round(fit_s, 1)})
        print(rows[-1], flush=True)
    return rows


def _markdown(report: dict) -> str:
    lines = ["# Learning rate per level (`python -m benchmarks.learning_rate`)", "",
             f"{report['date']}, {report['machine']}; load average at start {report['load_average_at_start']}.",
             "See the module docstring for data and sizes. EV: held-out, per level (finest last).", "",
             "| data | seed | model | ev_by_level | parent_recovered | child_recovered | "
             "children_under_true_parent | fit_seconds |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        cells = [r.get(key, "") for key in ("parent_recovered", "child_recovered", "children_under_true_parent")]
        lines.append(f"| {r['data']} | {r['seed']} | {r['model']} | {r['ev_by_level']} | "
                     + " | ".join(map(str, cells)) + f" | {r['fit_seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="synthetic seeds (default: 0 1)")
    parser.add_argument("--synthetic-max-iter", type=int, default=20, help="synthetic epochs (default: 20)")
    parser.add_argument("--max-iter", type=int, default=5, help="SmolLM2 epochs (default: 5)")
    parser.add_argument("--skip-smollm2", action="store_true", help="only the synthetic part")
    parser.add_argument("--data-home", default=None, help="activation cache (default: the package's)")
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    rows = synthetic(args.seeds, args.synthetic_max_iter)
    if not args.skip_smollm2:
        rows += smollm2(args.max_iter, args.data_home)
    report["rows"] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learning_rate.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "learning_rate.md").write_text(_markdown(report))


if __name__ == "__main__":
    main()
