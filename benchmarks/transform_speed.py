"""Streaming ``transform`` of the routed H-SAE over a float32 memmap on disk.

Usage (repository root)::

    python -m benchmarks.transform_speed           # 1M x 576 (2.3 GB) memmap, writes results
    python -m benchmarks.transform_speed --quick   # 100k rows, writes nothing unless --out

The memmap is written once under /tmp (``--path``), its pages are dropped from the page
cache (so the read is cold, as for activations cached on disk) and it is deleted at the
end unless ``--keep``. The timed call is exactly ``estimator.transform(memmap)``; a
sampler thread records the peaks of the resident set split into anonymous memory (our
arrays) and file pages (the memmap being read), and ``VmHWM`` gives the exact total
peak. A second pass (``--breakdown``) replays ``transform``'s stages one by one and
reports the RSS after each, to show where the memory goes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import _common as common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100k rows, a smaller model")
    p.add_argument("--rows", type=int, help="rows of the memmap (default 1M, quick 100k)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--routed", type=int, nargs=4, default=(2048, 16, 4, 32),
                   metavar=("P", "C", "S", "K"), help="n_parents, n_children, subspace_dim, k")
    p.add_argument("--data", default="auto", help='content: "auto", "synthetic" or a .npy, tiled')
    p.add_argument("--path", default="/tmp/sklearn_hsae_transform_bench.f32")
    p.add_argument("--keep", action="store_true", help="keep the memmap file afterwards")
    p.add_argument("--breakdown", action="store_true", help="also replay the stages with RSS probes")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", help="results folder (default: benchmarks/results for a full run)")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the saved model to load
    args = p.parse_args(argv)
    if args.rows is None:
        args.rows = 100_000 if args.quick else 1_000_000
    return args


def write_memmap(path: Path, n_rows: int, source: np.ndarray, chunk: int = 65_536) -> None:
    """Fill an (n_rows, d) float32 file by tiling ``source``; drop it from the page cache."""
    d = source.shape[1]
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(n_rows, d))
    rng = np.random.default_rng(1)
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        out[start:start + rows] = source[rng.integers(0, len(source), rows)]
    out.flush()
    del out
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold read, as from disk
    finally:
        os.close(fd)


def save_fitted_model(X: np.ndarray, folder: str, args) -> None:
    """Train a routed H-SAE for a few steps and save it with ``sklearn_hsae.io``.

    The transform is measured in a fresh interpreter that loads this file, as a user
    who encodes with a saved model would: the training process holds the live trainer
    and its reused step buffers (~0.75 GB at 2048x16, B=4096), and glibc keeps freed
    heap pages, so its RSS says little about ``transform``.
    """
    from sklearn_hsae import HierarchicalSparseAutoencoder, io

    P, C, s, k = args.routed
    est = HierarchicalSparseAutoencoder(P, n_children=C, subspace_dim=s, k=k, device="cpu",
                                        batch_size=args.batch_size, random_state=0)
    for start in range(0, len(X), args.batch_size):  # a few steps: speed does not need more
        est.partial_fit(X[start:start + args.batch_size])
    io.save(est, folder)


def csr_bytes(Z: sp.csr_matrix) -> int:
    return Z.data.nbytes + Z.indices.nbytes + Z.indptr.nbytes


def timed_transform(est, X: np.memmap) -> dict:
    """``est.transform(X)`` with the peak-RSS counter reset and a sampler running."""
    before = common.proc_status()
    exact = common.reset_peak_rss()
    with common.PeakSampler() as sampler:
        t = time.perf_counter()
        Z = est.transform(X)
        seconds = time.perf_counter() - t
    after = common.proc_status()
    input_bytes = X.size * X.itemsize
    out = {
        "rows": X.shape[0], "seconds": round(seconds, 1), "tokens_per_s": round(X.shape[0] / seconds, 1),
        "shape": list(Z.shape), "nnz": int(Z.nnz), "nnz_per_row": round(Z.nnz / X.shape[0], 2),
        "output_mib": common.mib(csr_bytes(Z)), "index_dtype": str(Z.indices.dtype),
        "input_mib": common.mib(input_bytes), "baseline_rss_mib": common.mib(before["VmRSS"]),
        "peak_rss_mib": common.mib(after["VmHWM"]), "peak_reset_exact": exact,
        "sampled_peak_anon_mib": common.mib(sampler.peak["RssAnon"]),
        "sampled_peak_file_mib": common.mib(sampler.peak["RssFile"]),
        "end_rss_mib": common.mib(after["VmRSS"]),
    }
    out["peak_over_input"] = round(after["VmHWM"] / input_bytes, 2)
    out["peak_over_baseline_mib"] = common.mib(after["VmHWM"] - before["VmRSS"])
    return out, Z


def breakdown(est, X: np.memmap) -> list[dict]:
    """Replay ``transform``'s stages (encode + per-block CSR, vstack per level, hstack)."""
    stages = []

    def mark(name, t):
        s = common.proc_status()
        stages.append({"stage": name, "seconds": round(time.perf_counter() - t, 1),
                       "rss_mib": common.mib(s["VmRSS"]), "anon_mib": common.mib(s["RssAnon"]),
                       "file_mib": common.mib(s["RssFile"]), "peak_mib": common.mib(s["VmHWM"])})

    common.reset_peak_rss()
    t = time.perf_counter()
    X = est._check_X(X, reset=False)
    mark("validate (check_array on the memmap)", t)
    t = time.perf_counter()
    blocks = [est._block_levels(codes, scale, X.dtype, ctx) for codes, scale, _, ctx in est._encode_blocks(X)]
    mark("encode + per-block CSR (all blocks held)", t)
    t = time.perf_counter()
    levels = [sp.vstack(level, format="csr") for level in zip(*blocks)]
    mark("vstack per level (blocks still held)", t)
    del blocks
    mark("blocks freed", time.perf_counter())
    t = time.perf_counter()
    Z = sp.hstack(levels, format="csr")
    mark("hstack of the levels", t)
    del levels, Z
    mark("all freed", time.perf_counter())
    return stages


def markdown(p: dict) -> str:
    m, r = p["machine"], p["transform"]
    lines = [
        "# Streaming transform (routed H-SAE, memmap in, CSR out)", "",
        f"{m['date']} on {m['cpu_model']}, {m['cpu_cores']} cores, {m['threads']} threads, torch "
        f"{m['versions']['torch']}; load average {m['load_average_start']} at the start, "
        f"{m.get('load_average_end')} at the end; commit {m['git']['commit'][:10]}.",
        f"Model: routed {p['settings']['routed'][:3]} (k={p['settings']['routed'][3]}), "
        f"batch_size={p['settings']['batch_size']}; data: {p['data']['kind']} rows tiled into "
        f"a {r['rows']:,} x 576 float32 memmap ({r['input_mib']:,} MiB), read cold.", "",
        "| tokens/s | seconds | nnz/row | output CSR MiB | peak RSS MiB | peak / input | "
        "peak anon MiB (sampled) | peak file MiB (sampled) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['tokens_per_s']:,.0f} | {r['seconds']} | {r['nnz_per_row']} | {r['output_mib']:,} | "
        f"{r['peak_rss_mib']:,} | {r['peak_over_input']} | {r['sampled_peak_anon_mib']:,} | "
        f"{r['sampled_peak_file_mib']:,} |", "",
        f"Target peak RSS <= 1.3 x input = {1.3 * r['input_mib']:,.0f} MiB: "
        f"{'met' if r['peak_over_input'] <= 1.3 else 'NOT met'}.",
    ]
    if p.get("breakdown"):
        lines += ["", "Stages replayed one by one (RSS after each; peak = VmHWM so far):", "",
                  "| stage | s | RSS MiB | anon MiB | file MiB | peak MiB |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['stage']} | {s['seconds']} | {s['rss_mib']:,} | {s['anon_mib']:,} | "
                  f"{s['file_mib']:,} | {s['peak_mib']:,} |" for s in p["breakdown"]]
    return "\n".join(lines) + "\n"


def measure(args) -> dict:
    """In this (fresh) process: load the saved model, transform the memmap, report."""
    from sklearn_hsae import io

    est = io.load(args.measure)
    X = np.memmap(args.path, dtype=np.float32, mode="r", shape=(args.rows, est.n_features_in_))
    result, Z = timed_transform(est, X)
    del Z
    out = {"transform": result}
    if args.breakdown:
        out["breakdown"] = breakdown(est, np.memmap(args.path, dtype=np.float32, mode="r", shape=X.shape))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    common.set_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args)))
        return
    info = common.machine_info(args.threads)
    source, provenance = common.load_activations(args.data, 65_536)
    path = Path(args.path)
    t = time.perf_counter()
    write_memmap(path, args.rows, source)
    print(f"wrote {path} ({common.mib(path.stat().st_size):,} MiB) in {time.perf_counter() - t:.0f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory() as folder:
            save_fitted_model(source[: 2 * args.batch_size].copy(), folder, args)
            del source
            cmd = [sys.executable, "-m", "benchmarks.transform_speed", *argv, "--measure", folder]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not lines:
            raise RuntimeError(f"the measuring process failed:\n{res.stderr[-3000:]}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    payload = {"benchmark": "transform_speed", "machine": info, "data": provenance,
               "settings": {k: v for k, v in vars(args).items() if k != "measure"},
               **json.loads(lines[-1])}
    payload["machine"]["load_average_end"] = common.load_average()
    md = markdown(payload)
    print(md)
    out = args.out or (None if args.quick else str(common.RESULTS))
    if out:
        common.write_json(Path(out) / "transform_speed.json", payload)
        (Path(out) / "transform_speed.md").write_text(md)
        print(f"wrote {out}/transform_speed.json and transform_speed.md")


if __name__ == "__main__":
    main()
