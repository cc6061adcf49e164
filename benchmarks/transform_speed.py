"""Streaming ``transform`` of the routed H-SAE over a float32 memmap on disk.

Usage (repository root)::

    python -m benchmarks.transform_speed           # 1M x 576 (2.3 GB) memmap, writes results
    python -m benchmarks.transform_speed --quick   # 100k rows, writes nothing unless --out

The memmap is written once under /tmp (``--path``) and deleted at the end unless
``--keep``. A routed H-SAE is trained for two steps and saved with ``sklearn_hsae.io``;
each measurement then runs in a fresh interpreter that loads it, with the file evicted
from the page cache first (a cold read, as for activations cached on disk). The timed
call is exactly ``estimator.transform(memmap)``; ``VmHWM`` gives the exact peak RSS and
a sampler thread splits it into anonymous memory (our arrays) and file pages (the
memmap). ``--breakdown`` replays ``transform``'s stages one by one with the RSS after
each, to show where the memory goes; ``streamed_transform`` (on unless ``--no-sketch``)
measures a sketch of a leaner transform in its own process, for comparison.
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
    p.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    p.add_argument("--rows", type=int, help="rows of the memmap (default 1M, quick 100k)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--routed", type=int, nargs=4, default=(2048, 16, 4, 32),
                   metavar=("P", "C", "S", "K"), help="n_parents, n_children, subspace_dim, k")
    p.add_argument("--data", default="auto", help='content: "auto", "synthetic" or a .npy, tiled')
    p.add_argument("--path", default="/tmp/sklearn_hsae_transform_bench.f32")
    p.add_argument("--keep", action="store_true", help="keep the memmap file afterwards")
    p.add_argument("--breakdown", action="store_true", help="also replay the stages with RSS probes")
    p.add_argument("--no-sketch", action="store_true",
                   help="skip streamed_transform, the sketch of a leaner transform")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", help="results folder (default: benchmarks/results for a full run)")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the saved model to load
    p.add_argument("--variant", default="transform", help=argparse.SUPPRESS)  # breakdown, sketch
    args = p.parse_args(argv)
    if args.rows is None:
        args.rows = 100_000 if args.quick else 1_000_000
    return args


def write_memmap(path: Path, n_rows: int, source: np.ndarray, chunk: int = 65_536) -> None:
    """Fill an (n_rows, d) float32 file by tiling ``source`` (rows drawn with a fixed seed)."""
    d = source.shape[1]
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(n_rows, d))
    rng = np.random.default_rng(1)
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        out[start:start + rows] = source[rng.integers(0, len(source), rows)]
    out.flush()
    del out


def drop_page_cache(path: Path) -> None:
    """Write the file out and evict it from the page cache: the next read is cold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
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


def measured(run):
    """``run()`` with the peak-RSS counter reset and a sampler running -> (value, figures)."""
    before = common.proc_status()
    exact = common.reset_peak_rss()
    with common.PeakSampler() as sampler:
        t = time.perf_counter()
        value = run()
        seconds = time.perf_counter() - t
    after = common.proc_status()
    return value, {
        "seconds": round(seconds, 1), "baseline_rss_mib": common.mib(before["VmRSS"]),
        "peak_rss_mib": common.mib(after["VmHWM"]), "peak_reset_exact": exact,
        "peak_over_baseline_mib": common.mib(after["VmHWM"] - before["VmRSS"]),
        "sampled_peak_anon_mib": common.mib(sampler.peak["RssAnon"]),
        "sampled_peak_file_mib": common.mib(sampler.peak["RssFile"]),
        "end_rss_mib": common.mib(after["VmRSS"]),
    }


def figures(Z: sp.csr_matrix, stats: dict, shape) -> dict:
    """Throughput, output size and the peak against the input's size."""
    input_mib = shape[0] * shape[1] * 4 / 2**20
    return {"rows": shape[0], "tokens_per_s": round(shape[0] / stats["seconds"], 1),
            "shape": list(Z.shape), "nnz": int(Z.nnz), "nnz_per_row": round(Z.nnz / shape[0], 2),
            "output_mib": common.mib(csr_bytes(Z)), "index_dtype": str(Z.indices.dtype),
            "input_mib": round(input_mib, 1), **stats,
            "peak_over_input": round(stats["peak_rss_mib"] / input_mib, 2)}


def streamed_transform(est, path: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """A sketch of a leaner ``transform`` for files, to measure what it would save.

    Not the library's code path: it uses the estimator's private pieces. Three changes
    from ``transform``: (1) blocks are read with ``readinto`` into one reused buffer, so
    no file page is ever mapped into the process (``X[rows]`` on a memmap keeps every
    page it touched resident); (2) finiteness is checked per block, not by a first pass
    over the whole file; (3) each block's CSR is copied straight into arrays sized for
    the worst case (k non-zeros per row and level), so no ``vstack``/``hstack`` copy
    exists; pages of those arrays that are never written never become resident.
    """
    import torch

    from sklearn_hsae._data import scale_rows

    n, d = shape
    model = est._model_from_state(est._model_state, torch.device("cpu")).eval()
    context = est._encode_context(model)
    widths = est._level_widths()
    per_row = est.k * len(widths)  # at most k codes per row and level
    data = np.empty(n * per_row, dtype=np.float32)
    indices = np.empty(n * per_row, dtype=np.int32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    block = np.empty((est.batch_size, d), dtype=np.float32)
    pos = 0
    with open(path, "rb") as f, torch.no_grad():
        for start in range(0, n, est.batch_size):
            rows = min(est.batch_size, n - start)
            f.readinto(memoryview(block[:rows]).cast("B"))
            if not np.isfinite(block[:rows]).all():
                raise ValueError("Input contains NaN or infinity.")
            x, row_scale = scale_rows(torch.from_numpy(block[:rows]), est.normalize, est.scale_)
            codes = sp.hstack(est._block_levels(model(x), row_scale, np.float32, context), format="csr")
            data[pos:pos + codes.nnz] = codes.data
            indices[pos:pos + codes.nnz] = codes.indices
            indptr[start + 1:start + rows + 1] = pos + codes.indptr[1:]
            pos += codes.nnz
    return sp.csr_matrix((data[:pos], indices[:pos], indptr), shape=(n, sum(widths)))


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
        "| tokens/s | seconds | nnz/row | output CSR MiB | RSS before MiB | peak RSS MiB | peak / input | "
        "peak anon MiB (sampled) | peak file MiB (sampled) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['tokens_per_s']:,.0f} | {r['seconds']} | {r['nnz_per_row']} | {r['output_mib']:,} | "
        f"{r['baseline_rss_mib']:,} | "
        f"{r['peak_rss_mib']:,} | {r['peak_over_input']} | {r['sampled_peak_anon_mib']:,} | "
        f"{r['sampled_peak_file_mib']:,} |", "",
        f"Target peak RSS <= 1.3 x input = {1.3 * r['input_mib']:,.0f} MiB: "
        f"{'met' if r['peak_over_input'] <= 1.3 else 'NOT met'}.",
    ]
    if p.get("streamed_sketch"):
        q = p["streamed_sketch"]
        lines += ["", "Sketch of a leaner transform (`streamed_transform`: file read into one reused "
                  "buffer, per-block finiteness check, CSR filled in place), in its own fresh process:", "",
                  "| tokens/s | seconds | nnz | peak RSS MiB | peak / input | peak anon MiB | peak file MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {q['tokens_per_s']:,.0f} | {q['seconds']} | {q['nnz']:,} | {q['peak_rss_mib']:,} | "
                  f"{q['peak_over_input']} | {q['sampled_peak_anon_mib']:,} | {q['sampled_peak_file_mib']:,} |"]
    if p.get("breakdown"):
        lines += ["", "Stages of `transform` replayed one by one in a fresh process (RSS after each; "
                  "peak = VmHWM so far):", "",
                  "| stage | s | RSS MiB | anon MiB | file MiB | peak MiB |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['stage']} | {s['seconds']} | {s['rss_mib']:,} | {s['anon_mib']:,} | "
                  f"{s['file_mib']:,} | {s['peak_mib']:,} |" for s in p["breakdown"]]
    return "\n".join(lines) + "\n"


def measure(args) -> dict:
    """In a fresh process: load the saved model, encode the file one way, report."""
    from sklearn_hsae import io

    est = io.load(args.measure)
    shape = (args.rows, est.n_features_in_)
    if args.variant == "sketch":
        Z, stats = measured(lambda: streamed_transform(est, args.path, shape))
        return {"streamed_sketch": figures(Z, stats, shape)}
    X = np.memmap(args.path, dtype=np.float32, mode="r", shape=shape)
    if args.variant == "breakdown":
        return {"breakdown": breakdown(est, X)}
    Z, stats = measured(lambda: est.transform(X))
    return {"transform": figures(Z, stats, shape)}


def run_measure(argv: list[str], folder: str, variant: str, path: Path) -> dict:
    drop_page_cache(path)
    cmd = [sys.executable, "-m", "benchmarks.transform_speed", *argv, "--measure", folder,
           "--variant", variant]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode or not lines:
        raise RuntimeError(f"the measuring process ({variant}) failed:\n{res.stderr[-3000:]}")
    return json.loads(lines[-1])


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
            measures = run_measure(argv, folder, "transform", path)
            for variant in ["breakdown"] * args.breakdown + ["sketch"] * (not args.no_sketch):
                measures.update(run_measure(argv, folder, variant, path))
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    payload = {"benchmark": "transform_speed", "machine": info, "data": provenance,
               "settings": {k: v for k, v in vars(args).items() if k not in ("measure", "variant")},
               **measures}
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
