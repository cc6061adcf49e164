"""Tree HSAE against its post-hoc baseline on real SmolLM2 activations (paper 2, Table 2).

Run from the repository root::

    python -m benchmarks.hierarchy_realdata [--max-iter 5] [--rhos 0.01 0.1 1]

Both models have the same widths, the same k per level and the same schedule; the
baseline (:func:`sklearn_hsae.posthoc_baseline`) trains its levels independently
(``rho=0``, no perturbation) and assigns the tree afterwards by the same
encoder-similarity rule. The hierarchy figures are measured on held-out tokens with
:func:`sklearn_hsae.metrics.hierarchy_consistency`; a comparison counts only where the
two models' FVUs (every level) agree within 0.01. Writes
``benchmarks/results/hierarchy_realdata.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.realdata import _held_out_split
from sklearn_hsae import HierarchicalSparseAutoencoder, posthoc_baseline
from sklearn_hsae.datasets import fetch_text_activations
from sklearn_hsae.metrics import fvu, hierarchy_consistency

RESULTS = Path(__file__).parent / "results"


def _level_fvus(estimator, X) -> list[float]:
    levels = estimator.encode(X).levels
    return [
        float(fvu(X, np.asarray(Z @ W + b)))
        for Z, W, b in zip(levels, estimator.components_by_level_, estimator.intercept_by_level_)
    ]


def _measure(name, estimator, X_train, X_test) -> dict:
    start = time.perf_counter()
    estimator.fit(X_train)
    seconds = time.perf_counter() - start
    codes = estimator.encode(X_test)
    h = hierarchy_consistency(codes.levels[0], codes.levels[1], estimator.parent_index_by_level_[1])
    out = {
        "model": name,
        "rho": estimator.rho,
        "perturb_rate": estimator.perturb_rate,
        "fit_seconds": round(seconds, 1),
        "n_steps": estimator.n_steps_,
        "reparent_every": estimator._config.reparent_every,  # "auto" resolved
        "fvu_by_level": [round(v, 4) for v in _level_fvus(estimator, X_test)],
        "assigned_fraction": float(np.mean(estimator.parent_index_by_level_[1] >= 0)),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()},
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--n-parents", type=int, default=512)
    parser.add_argument("--n-children", type=int, default=4)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--n-held-out", type=int, default=300)
    parser.add_argument("--reparent-every", type=int, default=None,
                        help="steps between re-parentings (default: the estimator's)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()

    data = fetch_text_activations(args.data_home, layer=15)
    _, train, test = _held_out_split(data, args.n_held_out, seed=0)  # realdata.py's split
    X_train, X_test = data.X[train], data.X[test]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip(),
        "n_train_tokens": int(len(X_train)),
        "n_test_tokens": int(len(X_test)),
        "widths": [args.n_parents, args.n_parents * args.n_children],
        "k": args.k,
        "max_iter": args.max_iter,
    }
    base = HierarchicalSparseAutoencoder(
        architecture="tree", n_parents=args.n_parents, n_children=args.n_children, k=args.k,
        max_iter=args.max_iter, batch_size=1024, random_state=0)
    if args.reparent_every is not None:
        base.set_params(reparent_every=args.reparent_every)
    report["reparent_every"] = base.reparent_every
    runs = [_measure("post-hoc baseline", posthoc_baseline(base), X_train, X_test)]
    for rho in args.rhos:
        runs.append(_measure(f"tree HSAE rho={rho:g}", base.set_params(rho=rho), X_train, X_test))
    report["runs"] = runs
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hierarchy_realdata{args.tag}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"hierarchy_realdata{args.tag}.md").write_text(_markdown(report))
    print(_markdown(report))


def _markdown(r: dict) -> str:
    base = r["runs"][0]
    lines = [
        "# Tree HSAE vs the post-hoc baseline on SmolLM2-135M layer 15",
        "",
        f"{r['date']}, {r['machine']}, load average at start {r['load_average_at_start']}, "
        f"commit {r['git_commit']}. Widths {r['widths']}, k = {r['k']} per level, "
        f"{r['max_iter']} epochs of batch 1024 (tree HSAE re-parented every "
        f"{r['runs'][-1].get('reparent_every', 1000)} steps) on {r['n_train_tokens']} tokens; figures on "
        f"{r['n_test_tokens']} held-out tokens (300 whole texts). Hamming counts held-out rows "
        "on which a parent's activity differs from the OR of its assigned children's, averaged "
        "over parents with at least one assigned child.",
        "",
        "| model | FVU level 0 | FVU level 1 | P(parent\\|child) | P(child\\|parent) "
        "| P(any child\\|parent) | Hamming (rows) | Hamming / rows | assigned | equal FVU (±0.01) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in r["runs"]:
        equal = all(abs(a - b) <= 0.01 for a, b in zip(e["fvu_by_level"], base["fvu_by_level"]))
        lines.append(
            f"| {e['model']} | {e['fvu_by_level'][0]:.4f} | {e['fvu_by_level'][1]:.4f} "
            f"| {e['p_parent_given_child']:.3f} | {e['p_child_given_parent']:.3f} "
            f"| {e['p_any_child_given_parent']:.3f} | {e['hamming']:.1f} | {e['hamming_rate']:.4f} "
            f"| {e['assigned_fraction']:.2f} | {'yes' if equal else 'no'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
