"""Real SmolLM2 activations: extraction speed, cache, and SAE quality (FVU, CE recovered, absorption).

Run from the repository root::

    python benchmarks/realdata.py --data-home /tmp/sklearn_hsae_data

Writes ``benchmarks/results/realdata.json`` and ``realdata.md``. Everything runs offline on
CPU; the full run (PCA, four flat SAEs, the H-SAE) took about 30 minutes on two cores.
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
from sklearn.decomposition import PCA

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae.datasets import extract_activations, fetch_text_activations
from sklearn_hsae.metrics import ce_loss_recovered, first_letter_absorption

RESULTS = Path(__file__).parent / "results"


def _folder_size(folder: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())}


def _explained_variance(estimator, X) -> float:
    """1 - FVU of inverse_transform(transform(X)) (PCA's score is a log-likelihood)."""
    X_hat = estimator.inverse_transform(estimator.transform(X))
    err = ((X.astype(np.float64) - X_hat) ** 2).sum()
    return float(1 - err / ((X - X.mean(axis=0, dtype=np.float64)) ** 2).sum())


def _l0(estimator, X) -> float:
    """Mean non-zeros per row of all codes (for the H-SAE: parents plus children)."""
    Z = estimator.transform(X)
    return float((Z != 0).sum() / len(X)) if hasattr(Z, "nnz") else float(Z.shape[1])


def _held_out_split(data, n_held_out: int, seed: int):
    """Hold out ``n_held_out`` texts (whole texts, never split across train and test)."""
    rng = np.random.RandomState(seed)
    held = np.sort(rng.choice(len(data.texts), n_held_out, replace=False))
    test_rows = np.isin(data.doc_index, held)
    return held, ~test_rows, test_rows


def _evaluate(name, estimator, data, train, test, held, absorption_rows, layer):
    start = time.perf_counter()
    estimator.fit(data.X[train])
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    ce = ce_loss_recovered(estimator, [data.texts[i] for i in held], layer=layer)
    ce_s = time.perf_counter() - start
    start = time.perf_counter()
    absorption = first_letter_absorption(
        estimator, data.X[absorption_rows], data.tokens[absorption_rows]
    )
    out = {
        "estimator": name,
        "fit_seconds": round(fit_s, 1),
        "n_steps": getattr(estimator, "n_steps_", None),
        "held_out_explained_variance": _explained_variance(estimator, data.X[test]),
        "held_out_l0": _l0(estimator, data.X[test]),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in ce.items()},
        "ce_seconds": round(ce_s, 1),
        "absorption_rate": round(absorption["absorption_rate"], 4),
        "main_miss_rate": round(absorption["main_miss_rate"], 4),
        "probe_accuracy": round(absorption["probe_accuracy"], 4),
        "absorption_letters": int(len(absorption["letters"])),
        "absorption_seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--n-held-out", type=int, default=300)
    parser.add_argument("--absorption-tokens", type=int, default=40_000)
    args = parser.parse_args()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average_at_start": os.getloadavg(),
    }

    start = time.perf_counter()
    load_model()
    report["model_load_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    data = fetch_text_activations(args.data_home, layer=args.layer)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    data = fetch_text_activations(args.data_home, layer=args.layer)
    report["cache_read_seconds"] = round(time.perf_counter() - start, 2)
    folder = next((Path(args.data_home or "~/sklearn_hsae_data").expanduser() / "text_activations").glob(
        f"smollm2-135m-L{args.layer}-*"))
    meta = json.loads((folder / "meta.json").read_text())
    report.update(
        fetch_first_call_seconds=round(first_s, 1),
        extraction_seconds=meta["extraction_seconds"],
        n_texts=len(data.texts),
        n_tokens=int(len(data.X)),
        n_dropped=data.n_dropped,
        extraction_tokens_per_second=round((len(data.X) + len(data.texts)) / meta["extraction_seconds"]),
        cache_bytes=_folder_size(folder),
        corpus_version=data.corpus_version,
    )
    # The first call's speed depends on what else ran then; time a sample again, now.
    sample = data.texts[:1000]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    n = len(extract_activations(sample, layer=args.layer).X) + len(sample)
    seconds = time.perf_counter() - start
    report["extraction_sample"] = {
        "n_texts": len(sample), "tokens_with_bos": n, "seconds": round(seconds, 1),
        "tokens_per_second": round(n / seconds), "load_average_1min": round(load, 2)}
    print(json.dumps(report), flush=True)

    held, train, test = _held_out_split(data, args.n_held_out, seed=0)
    rng = np.random.RandomState(1)
    absorption_rows = np.sort(rng.choice(len(data.X), min(args.absorption_tokens, len(data.X)), replace=False))
    report.update(n_train_tokens=int(train.sum()), n_test_tokens=int(test.sum()), n_held_out_texts=len(held))
    # The grid: flat TopK at the parent width and at 4x, at k=32 and at k=64 (the
    # L0 match: the H-SAE has k active parents plus up to k active children), all trained
    # on the same tokens for the same number of steps (max_iter epochs of batch_size 1024).
    estimators = {"PCA(n_components=32)": PCA(n_components=32, random_state=0)}
    for width in (1024, 4096):
        for k in (32, 64):
            estimators[f"SparseAutoencoder(n_components={width}, k={k})"] = SparseAutoencoder(
                n_components=width, k=k, max_iter=args.max_iter, random_state=0)
    estimators["HierarchicalSparseAutoencoder(n_parents=1024, n_children=16, subspace_dim=4, k=32)"] = (
        HierarchicalSparseAutoencoder(
            n_parents=1024, n_children=16, subspace_dim=4, k=32, max_iter=args.max_iter,
            random_state=0))
    report["results"] = [
        _evaluate(name, est, data, train, test, held, absorption_rows, args.layer)
        for name, est in estimators.items()
    ]
    report["git_commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realdata.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "realdata.md").write_text(_markdown(report, args.max_iter))


def rewrite_markdown(max_iter: int = 5) -> None:
    """Regenerate realdata.md from realdata.json (after a change to the table's layout)."""
    report = json.loads((RESULTS / "realdata.json").read_text())
    (RESULTS / "realdata.md").write_text(_markdown(report, max_iter))


def _markdown(r: dict, max_iter: int) -> str:
    lines = [
        "# Real SmolLM2-135M activations (layer 15), measured by benchmarks/realdata.py",
        "",
        f"{r.get('date', '')}, {r['machine']}; load average at start "
        f"{[round(v, 2) for v in r['load_average_at_start']]}; commit {r.get('git_commit')}.",
        "",
        f"* Model load (GGUF dequantisation, tokenizer): {r['model_load_seconds']} s",
        f"* Extraction: {r['n_tokens']} tokens from {r['n_texts']} texts in "
        f"{r['extraction_seconds']} s ({r['extraction_tokens_per_second']} tokens/s, BOS included); "
        f"{r['n_dropped']} massive-norm rows dropped",
        f"* Cache: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in r["cache_bytes"].items())
        + f"; second call {r['cache_read_seconds']} s",
        f"* Extraction again, {r['extraction_sample']['n_texts']} texts: "
        f"{r['extraction_sample']['tokens_per_second']} tokens/s "
        f"(1-min load average {r['extraction_sample']['load_average_1min']})",
        f"* Train {r['n_train_tokens']} tokens, {max_iter} epochs; held out {r['n_held_out_texts']} "
        f"texts ({r['n_test_tokens']} tokens)",
        "",
        "| estimator | steps | fit s | held-out EV | L0 | CE clean | CE spliced | CE zero-abl. | CE mean-abl. "
        "| recovered | recovered vs mean | absorption | main miss | probe acc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in r["results"]:
        lines.append(
            f"| {e['estimator']} | {e['n_steps']} | {e['fit_seconds']} "
            f"| {e['held_out_explained_variance']:.4f} | {e['held_out_l0']:.1f} "
            f"| {e['ce_clean']:.4f} | {e['ce_spliced']:.4f} | {e['ce_zero_ablation']:.4f} "
            f"| {e['ce_mean_ablation']:.4f} | {e['ce_loss_recovered']:.4f} "
            f"| {e['ce_loss_recovered_mean_ablation']:.4f} | {e['absorption_rate']:.4f} "
            f"| {e['main_miss_rate']:.4f} | {e['probe_accuracy']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
