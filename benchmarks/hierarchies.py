"""Every hierarchical design and the flat baselines on SmolLM2 layer 15, at equal L0.

Run from the repository root::

    python -m benchmarks.hierarchies [--l0 32 64] [--max-iter 5] [--n-ce-texts 100]

Contenders, sized to about 4,600 atoms each (512 first-level features, 8 children per
parent): the routed H-SAE (512 x 8, s=4), the tree HSAE (512 -> 4096) and its post-hoc
baseline, Tree SAE (``architecture="nested"``, 512 -> 4096), a flat TopK and a Matryoshka
TopK (4608 latents, prefixes [512, 4608]). "Equal L0" counts the atoms the model's own
reconstruction (``score``, ``inverse_transform``) adds up per row:

- flat TopK, Matryoshka: ``k = L0``;
- routed: ``k = L0 / 2`` active parents, each adding at most one child;
- tree HSAE and its baseline: ``k = L0`` in every level (each level reconstructs alone;
  the finest is the model's reconstruction);
- Tree SAE: ``k = L0 / 2`` in each of its two cumulative levels.

All are trained on the same tokens (whole texts held out, as ``benchmarks/realdata.py``)
for the same epochs of batch 1024. Held-out: explained variance, CE loss recovered on
``--n-ce-texts`` held-out texts, every metric of ``metrics.hierarchy_scores`` (flat
models get a post-hoc tree), first-letter absorption, and fit time. Writes
``benchmarks/results/hierarchies.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.realdata import _held_out_split
from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder, posthoc_baseline
from sklearn_hsae.datasets import fetch_text_activations
from sklearn_hsae.metrics import ce_loss_recovered, first_letter_absorption, hierarchy_scores

RESULTS = Path(__file__).parent / "results"
P, C = 512, 8


def contenders(l0: int, max_iter: int) -> dict:
    common = dict(max_iter=max_iter, batch_size=1024, random_state=0)
    tree = HierarchicalSparseAutoencoder(architecture="tree", n_parents=P, n_children=C, k=l0, **common)
    return {
        "routed H-SAE": HierarchicalSparseAutoencoder(n_parents=P, n_children=C, k=l0 // 2, **common),
        "tree HSAE": tree,
        "post-hoc baseline": posthoc_baseline(tree),
        "Tree SAE (nested)": HierarchicalSparseAutoencoder(
            architecture="nested", n_parents=P, n_children=C, k=l0 // 2, **common),
        "flat TopK": SparseAutoencoder(n_components=P * (1 + C), k=l0, **common),
        "Matryoshka": SparseAutoencoder(n_components=P * (1 + C), k=l0,
                                        matryoshka_prefixes=[P, P * (1 + C)], **common),
    }


def measure(name, est, data, train, test, ce_texts) -> dict:
    start = time.perf_counter()
    est.fit(data.X[train])
    fit_s = time.perf_counter() - start
    X_test = data.X[test]
    Z = est.transform(X_test)
    start = time.perf_counter()
    ce = ce_loss_recovered(est, ce_texts, layer=15)
    ce_s = time.perf_counter() - start
    # 100 drawn parents bound the probe metrics (one probe per distinct child) on wide models.
    scores = hierarchy_scores(est, X_test, tokens=data.tokens[test], n_parents=100, random_state=0)
    absorption = first_letter_absorption(est, X_test, data.tokens[test])
    out = {
        "model": name,
        "fit_seconds": round(fit_s, 1),
        "n_steps": est.n_steps_,
        "held_out_ev": round(float(est.score(X_test)), 4),
        "reconstruction_l0": round(float(np.mean(_reconstruction_l0(est, Z))), 2),
        "l0_by_level": [round(v, 2) for v in est.l0_],
        "ce_loss_recovered": round(float(ce["ce_loss_recovered"]), 4),
        "ce_seconds": round(ce_s, 1),
        "absorption_rate": round(float(absorption["absorption_rate"]), 4),
        **{k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
           for k, v in scores.items() if np.isscalar(v)},
    }
    print(json.dumps(out), flush=True)
    return out


def _reconstruction_l0(est, Z) -> np.ndarray:
    """Nonzero codes per row among the columns the model's reconstruction uses."""
    widths = [c.shape[0] for c in est.components_by_level_]
    _, model_class = est._architecture()
    first = 0 if model_class.cumulative else sum(widths[:-1])
    return Z[:, first:].getnnz(axis=1)


def markdown(report: dict) -> str:
    keys = ["held_out_ev", "ce_loss_recovered", "reconstruction_l0", "p_parent_given_child",
            "p_child_given_parent", "hamming_rate", "sibling_cooccurrence", "composition",
            "hierarchy_mcs", "hierarchy_tree_structure", "feature_splitting", "absorption_rate",
            "fit_seconds"]
    lines = [
        "# Hierarchical SAEs and flat baselines on SmolLM2 layer 15 (`python -m benchmarks.hierarchies`)",
        "",
        f"{report['date']}, {report['machine']}; load average at start {report['load_average_at_start']}.",
        f"{report['n_train_tokens']:,} training tokens, {report['n_test_tokens']:,} held-out tokens "
        f"({report['n_held_out']} whole texts), CE on {report['n_ce_texts']} held-out texts; "
        f"{report['max_iter']} epochs of batch 1024. See the module docstring for the sizes and "
        "the L0 accounting.",
        "",
    ]
    for l0, rows in report["results"].items():
        lines += [f"## L0 = {l0}", "", "| model | " + " | ".join(keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for r in rows:
            lines.append(f"| {r['model']} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None, help="activation cache (default: the package's)")
    parser.add_argument("--l0", type=int, nargs="+", default=[32, 64], help="total L0 values (default: 32 64)")
    parser.add_argument("--max-iter", type=int, default=5, help="epochs of every fit (default: 5)")
    parser.add_argument("--n-held-out", type=int, default=300, help="held-out texts (default: 300)")
    parser.add_argument("--n-ce-texts", type=int, default=100,
                        help="held-out texts for CE loss recovered (default: 100)")
    parser.add_argument("--only", nargs="*", default=None, help="names of contenders to run (default: all)")
    args = parser.parse_args()
    data = fetch_text_activations(args.data_home, layer=15)
    held, train, test = _held_out_split(data, args.n_held_out, seed=0)
    ce_texts = [data.texts[i] for i in held[: args.n_ce_texts]]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "n_train_tokens": int(train.sum()), "n_test_tokens": int(test.sum()),
        "n_held_out": args.n_held_out, "n_ce_texts": len(ce_texts), "max_iter": args.max_iter,
        "results": {},
    }
    for l0 in args.l0:
        rows = report["results"][str(l0)] = []
        for name, est in contenders(l0, args.max_iter).items():
            if args.only and name not in args.only:
                continue
            rows.append(measure(name, est, data, train, test, ce_texts))
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "hierarchies.json").write_text(json.dumps(report, indent=1))
            (RESULTS / "hierarchies.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
