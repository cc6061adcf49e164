"""Training speed of sklearn_hsae against sparsify, SAELens and scikit-learn, interleaved.

Usage (repository root; peers are imported from the same environment when present)::

    python -m benchmarks.train_speed            # full run, writes benchmarks/results/
    python -m benchmarks.train_speed --quick    # smoke run, writes nothing unless --out
    python -m benchmarks.train_speed --data PATH.npy --rounds 9 --profile

Every contender (see ``_contenders.py``) is built, warmed up, then timed round-robin:
each round runs one step of every contender, in an order rotated every round, so a
change of machine load hits all of them alike. Tokens/s is rows per step over the
median step time. Ratios are taken between contenders of this one run only. Peak RSS
is measured per contender in a fresh subprocess (see ``memory_probe``), because the
peak of a process that hosts all of them says nothing about any one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from . import _common as common
from ._contenders import contenders
from ._quality import dictionary_learning_quality
from ._report import ratio_table, train_markdown

FULL = {"widths": (2048, 16384, 34816), "rows": 4096, "warmup": 2, "rounds": 7, "pool": 8}
QUICK = {"widths": (2048, 4096), "rows": 1024, "warmup": 1, "rounds": 5, "pool": 4}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--data", default="auto", help='"auto", "synthetic" or a .npy of activations')
    p.add_argument("--widths", type=int, nargs="+", help="flat TopK widths")
    p.add_argument("--rows", type=int, help="rows per training step (batch_size)")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--routed", type=int, nargs=3, default=(2048, 16, 4), metavar=("P", "C", "S"),
                   help="n_parents, n_children, subspace_dim of the routed H-SAE")
    p.add_argument("--warmup", type=int, help="untimed steps per contender after the first")
    p.add_argument("--rounds", type=int, help="timed round-robin rounds (one step each)")
    p.add_argument("--pool", type=int, help="distinct batches cycled through")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--mbdl-rows", type=int, default=256, help="rows per MBDL partial_fit (0: skip)")
    p.add_argument("--mbdl-alpha", type=float, default=4.0,
                   help="lasso penalty of MBDL (4: fastest and best OMP FVU of 1, 4, 10 in a pilot)")
    p.add_argument("--only", nargs="+", help="run only contenders whose name contains one of these")
    p.add_argument("--profile", action="store_true", help="torch.profiler of one routed and one flat step")
    p.add_argument("--no-memory", action="store_true", help="skip the per-contender RSS subprocesses")
    p.add_argument("--no-quality", action="store_true", help="skip the H-SAE vs MBDL quality fit")
    p.add_argument("--quality-seconds", type=float, help="MBDL training budget of the quality fit")
    p.add_argument("--out", help="results folder (default: benchmarks/results for a full run)")
    p.add_argument("--report-only", metavar="JSON",
                   help="recompute the ratios and the markdown of a saved run, time nothing")
    p.add_argument("--probe", type=int, help=argparse.SUPPRESS)  # internal: memory subprocess
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quality_seconds is None:
        args.quality_seconds = 20.0 if args.quick else 240.0
    return args


def make_contenders(args):
    found = contenders(tuple(args.widths), args.rows, args.k, tuple(args.routed),
                       args.mbdl_rows, 2048 if not args.quick else 256, args.mbdl_alpha)
    if args.only:
        found = [c for c in found if any(s in c.name for s in args.only)]
    return found


# ------------------------------------------------------------------ timing
def interleaved(cands, pool, warmup: int, rounds: int) -> tuple[dict, list]:
    """Build, warm up and time every contender round-robin; per-step seconds per name."""
    for c in cands:
        t = time.perf_counter()
        c.build(pool[0])
        print(f"built {c.name} in {time.perf_counter() - t:.1f} s", flush=True)
    times = {c.name: [] for c in cands}
    cpu = {c.name: [] for c in cands}
    loads = []
    for r in range(-warmup, rounds):
        order = cands[r % len(cands):] + cands[: r % len(cands)]  # rotate the start
        for c in order:
            batch = pool[(r + warmup + 1) % len(pool)]
            t0, c0 = time.perf_counter(), time.process_time()
            c.step(batch)
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= 0:
                times[c.name].append(t1 - t0)
                cpu[c.name].append(c1 - c0)
        loads.append(common.load_average())
        label = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
        print(f"{label} done, load {loads[-1]}", flush=True)
    return {"wall": times, "cpu": cpu}, loads


def summarise(cands, timing) -> dict:
    out = {}
    for c in cands:
        wall = timing["wall"][c.name]
        med = statistics.median(wall)
        out[c.name] = {
            "library": c.library, "width": c.width, "rows_per_step": c.rows, "params": c.params,
            "step_seconds": [round(t, 4) for t in wall],
            "median_step_s": round(med, 4),
            "tokens_per_s": round(c.rows / med, 1),
            "cpu_per_wall": round(sum(timing["cpu"][c.name]) / sum(wall), 2),
        }
    return out


# ----------------------------------------------------------------- GEMM
@torch.no_grad()
def gemm_probe(contender, batch: np.ndarray, repeats: int = 7) -> dict:
    """Achieved GFLOP/s of our encoder GEMM as the model runs it vs a plain ``torch.mm``.

    Ours: ``common.pre_activations`` (``addmm`` with bias into the reused workspace buffer);
    plain: ``torch.mm(x, W.T)`` into a fresh tensor, alternated in the same loop.
    """
    from sklearn_hsae._models.common import pre_activations

    model = contender.torch_model()
    W, b = model.W_enc.detach(), model.b_enc.detach()
    x = torch.from_numpy(batch) * float(contender.estimator.scale_) - model.b_dec.detach()
    buf = model.workspace.get("pre", (x.shape[0], W.shape[0]), x.dtype, x.device)
    flop = 2.0 * x.shape[0] * x.shape[1] * W.shape[0]
    ours, plain = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        pre_activations(x, W, b, out=buf)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.mm(x, W.T)
        plain.append(time.perf_counter() - t)
    o, p = statistics.median(ours), statistics.median(plain)
    return {"contender": contender.name, "shape": [x.shape[0], x.shape[1], W.shape[0]],
            "ours_gflops": round(flop / o / 1e9, 1), "plain_mm_gflops": round(flop / p / 1e9, 1),
            "ours_s": round(o, 4), "plain_s": round(p, 4)}


# --------------------------------------------------------------- profile
def profile_step(contender, batch: np.ndarray, top: int = 12) -> dict:
    """Top operators (by self CPU time) of one training step under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        contender.step(batch)
        wall = time.perf_counter() - t
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
             "self_pct": round(100 * e.self_cpu_time_total / total, 1)} for e in events[:top]]
    return {"contender": contender.name, "wall_s_profiled": round(wall, 3), "top_ops": rows}


# ---------------------------------------------------------------- memory
def memory_probe(index: int, args) -> dict:
    """Peak RSS of one contender in a fresh interpreter: build + 3 steps.

    ``baseline`` is the RSS after imports and the data; the peak-RSS counter is then
    reset (``/proc/self/clear_refs``), so ``peak - baseline`` is what the contender
    itself held at its worst moment (weights, optimizer state, step temporaries).
    """
    cand = make_contenders(args)[index]
    X, _ = common.load_activations(args.data, 2 * args.rows)
    pool = [X[: args.rows], X[args.rows:]]
    before = common.proc_status()
    exact = common.reset_peak_rss()
    cand.build(pool[0])
    for i in range(3):
        cand.step(pool[i % 2])
    after = common.proc_status()
    return {"name": cand.name, "baseline_mib": common.mib(before["VmRSS"]),
            "peak_mib": common.mib(after["VmHWM"]),
            "own_peak_mib": common.mib(after["VmHWM"] - before["VmRSS"]),
            "peak_reset_exact": exact}


def memory_probes(cands, argv) -> dict:
    out = {}
    for i, c in enumerate(cands):
        cmd = [sys.executable, "-m", "benchmarks.train_speed", *argv, "--probe", str(i)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not lines:
            print(f"memory probe of {c.name} failed:\n{res.stderr[-2000:]}")
            continue
        out[c.name] = json.loads(lines[-1])
        print(f"peak RSS {c.name}: {out[c.name]['own_peak_mib']} MiB over baseline", flush=True)
    return out


# ------------------------------------------------------------------ main
def rewrite_report(path) -> None:
    """Ratios and markdown again from a saved JSON (same run, same numbers)."""
    payload = json.loads(path.read_text())
    payload["ratios"] = ratio_table(payload["contenders"], payload["settings"]["widths"])
    common.write_json(path, payload)
    path.with_suffix(".md").write_text(train_markdown(payload))
    print(f"rewrote {path} and {path.with_suffix('.md')}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report_only:
        return rewrite_report(common.Path(args.report_only))
    common.set_threads(args.threads)
    if args.probe is not None:
        print(json.dumps(memory_probe(args.probe, args)))
        return
    info = common.machine_info(args.threads)
    print(f"machine: {info['cpu_model']}, {info['cpu_cores']} cores, threads={args.threads}, "
          f"load {info['load_average_start']}", flush=True)
    X, provenance = common.load_activations(args.data, args.pool * args.rows + 40_000)
    pool = [X[i * args.rows:(i + 1) * args.rows] for i in range(args.pool)]
    cands = make_contenders(args)
    timing, loads = interleaved(cands, pool, args.warmup, args.rounds)
    results = summarise(cands, timing)
    payload = {"benchmark": "train_speed", "machine": info, "data": provenance,
               "settings": {k: v for k, v in vars(args).items() if k != "probe"},
               "contenders": results, "load_per_round": loads}
    own = [c for c in cands if c.library == "sklearn_hsae"]
    payload["ratios"] = ratio_table(results, args.widths)
    print(json.dumps({"contenders": results, "ratios": payload["ratios"]}, indent=1), flush=True)
    payload["gemm"] = [gemm_probe(c, pool[0]) for c in own if c.name.startswith(("sklearn_hsae routed",))]
    if args.profile:
        picks = [c for c in own if "routed" in c.name or c.name.endswith(f" {args.widths[min(1, len(args.widths) - 1)]}")]
        payload["profiles"] = [profile_step(c, pool[1]) for c in picks]
    payload["ratios"] = ratio_table(results, args.widths)
    if not args.no_quality:
        test = X[args.pool * args.rows:]
        payload["quality"] = dictionary_learning_quality(X[: args.pool * args.rows], test, args)
    if not args.no_memory:
        payload["memory"] = memory_probes(cands, argv)
    payload["machine"]["load_average_end"] = common.load_average()
    out = args.out or (None if args.quick else str(common.RESULTS))
    md = train_markdown(payload)
    print(md)
    if out:
        common.write_json(common.Path(out) / "train_speed.json", payload)
        (common.Path(out) / "train_speed.md").write_text(md)
        print(f"wrote {out}/train_speed.json and train_speed.md")


if __name__ == "__main__":
    main()
