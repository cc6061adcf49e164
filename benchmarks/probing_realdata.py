"""Sparse probing on real SmolLM2 activations: parents, children, raw activations, flat SAE.

Run from the repository root::

    python -m benchmarks.probing_realdata [--max-iter 5]

The SAEBench protocol (:func:`sklearn_hsae.probing.make_sparse_probe`): keep the k
latents with the largest class-mean gap on the training split, then a logistic
regression on those k columns. Four tasks on the gensim corpus from
:func:`sklearn_hsae.datasets.fetch_text_activations`:

- ``topic``: Usenet posts, alt.atheism vs sci.space, one row per text (mean-pooled);
- ``source``: news / Usenet / review, 3 classes, one row per text (mean-pooled);
- ``capitalized``: word-initial tokens, is the word capitalised (one row per token);
- ``has_digit``: all tokens, does the token contain a digit (one row per token).

Train and test are split by original document (no document on both sides); the SAEs
are fitted on the training documents' tokens only. Writes
``benchmarks/results/probing_realdata.{json,md}``.
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
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import fetch_text_activations
from sklearn_hsae.probing import make_sparse_probe

RESULTS = Path(__file__).parent / "results"
KS = (1, 2, 5, 20)


def _scores(Z, y, train, test) -> dict:
    out = {}
    for k in KS:
        probe = make_sparse_probe(min(k, Z.shape[1]), random_state=0).fit(Z[train], y[train])
        out[str(k)] = round(float(probe.score(Z[test], y[test])), 4)
    full = LogisticRegression(max_iter=2000).fit(Z[train], y[train])
    out["all"] = round(float(full.score(Z[test], y[test])), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--n-tokens", type=int, default=30_000)
    args = parser.parse_args()

    data = fetch_text_activations(args.data_home, layer=15)
    n_texts, n_tokens = len(data.texts), len(data.X)
    split = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=0)
    train_texts, test_texts = next(split.split(np.arange(n_texts), groups=data.group))
    train_rows = np.isin(data.doc_index, train_texts)

    models = {
        "H-SAE 1024x16 (s=4, k=32)": HierarchicalSparseAutoencoder(
            n_parents=1024, n_children=16, subspace_dim=4, k=32, max_iter=args.max_iter,
            random_state=0),
        "flat TopK 4096 (k=64)": SparseAutoencoder(
            n_components=4096, k=64, max_iter=args.max_iter, random_state=0),
    }
    for model in models.values():
        model.fit(data.X[train_rows])
    codes = models["H-SAE 1024x16 (s=4, k=32)"].encode(data.X)
    sets = {
        "raw activations (576)": data.X,
        "H-SAE parents (1024)": codes.parent,
        "H-SAE children (16384)": codes.child,
        "H-SAE parents + children": sp.hstack([codes.parent, codes.child], format="csr"),
        "flat TopK 4096 (k=64)": models["flat TopK 4096 (k=64)"].transform(data.X),
    }

    counts = np.bincount(data.doc_index, minlength=n_texts)
    pool = sp.csr_matrix((1.0 / counts[data.doc_index], (data.doc_index, np.arange(n_tokens))),
                         shape=(n_texts, n_tokens))
    is_train_text = np.isin(np.arange(n_texts), train_texts)
    rng = np.random.RandomState(0)
    tasks = {}
    usenet = data.source == "usenet"
    tasks["topic"] = ("text", np.flatnonzero(usenet), (data.topic == "space").astype(int))
    tasks["source"] = ("text", np.arange(n_texts), data.source.astype(str))
    words = np.flatnonzero(data.word_start)
    tasks["capitalized"] = ("token", np.sort(rng.choice(words, min(args.n_tokens, len(words)),
                                                        replace=False)), data.capitalized.astype(int))
    tasks["has_digit"] = ("token", np.sort(rng.choice(n_tokens, min(args.n_tokens, n_tokens),
                                                      replace=False)), data.has_digit.astype(int))

    results = []
    for task, (unit, rows, y_all) in tasks.items():
        train_mask = is_train_text[rows] if unit == "text" else train_rows[rows]
        train, test = np.flatnonzero(train_mask), np.flatnonzero(~train_mask)
        y = y_all[rows]
        values, counts_ = np.unique(y[train], return_counts=True)
        chance = float(np.mean(y[test] == values[np.argmax(counts_)]))
        for name, Z in sets.items():
            feats = (pool @ Z)[rows] if unit == "text" else Z[rows]
            feats = feats.tocsr() if sp.issparse(feats) else np.asarray(feats)
            start = time.perf_counter()
            row = {"task": task, "unit": unit, "features": name, "n_train": len(train),
                   "n_test": len(test), "chance": round(chance, 4), **_scores(feats, y, train, test),
                   "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)

    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip(),
        "max_iter": args.max_iter,
        "held_out_explained_variance": {
            name: round(float(m.score(data.X[~train_rows])), 4) for name, m in models.items()},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "probing_realdata.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "probing_realdata.md").write_text(_markdown(report))
    print(_markdown(report))


def _markdown(r: dict) -> str:
    lines = [
        "# Sparse probing on SmolLM2-135M layer-15 activations",
        "",
        f"{r['date']}, {r['machine']}, commit {r['git_commit']}. SAEs fitted for {r['max_iter']} "
        "epochs on the training documents' tokens; held-out explained variance: "
        + ", ".join(f"{k} {v}" for k, v in r["held_out_explained_variance"].items()) + ".",
        "Test accuracy of k-sparse probes (SAEBench selection: largest class-mean gap on the "
        "training split) and of a logistic regression on all columns; split by document.",
        "",
        "| task | rows (train/test) | features | k=1 | k=2 | k=5 | k=20 | all | chance |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in r["results"]:
        lines.append(
            f"| {e['task']} ({e['unit']}) | {e['n_train']}/{e['n_test']} | {e['features']} "
            f"| {e['1']:.3f} | {e['2']:.3f} | {e['5']:.3f} | {e['20']:.3f} | {e['all']:.3f} "
            f"| {e['chance']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
