"""Plumbing shared by the benchmarks: threads, machine facts, activations, memory probes.

Timings on a shared machine are noisy, so every result file records the load average
next to the numbers, and every ratio we report comes from one interleaved run.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
N_FEATURES = 576  # SmolLM2-135M residual width
PEER_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "eai-sparsify", "sae-lens")


# ------------------------------------------------------------------ process
def set_threads(n_threads: int) -> None:
    """Give torch and the BLAS under numpy/scikit-learn the same number of threads."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n_threads)
    threadpool_limits(n_threads)


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (runnable threads, over all cores)."""
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(n_threads: int) -> dict:
    """What a reader needs to judge the numbers: hardware, software, load, commit."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PEER_PACKAGES},
        "threads": n_threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_start": load_average(),
        "git": _git_commit(),
    }


# --------------------------------------------------------------- activations
def synthetic_activations(n_rows: int, n_features: int = N_FEATURES, seed: int = 0,
                          chunk: int = 65_536) -> np.ndarray:
    """Fixed-seed stand-in for SmolLM2-135M layer-15 residual activations, float32.

    Matched on the figures that matter for speed and TopK statistics, measured on real
    layer-15 activations: a mean vector of norm ~120 dominated by two "massive" dims
    (~80), centred rows of median norm ~110, and an anisotropic spectrum. The centred
    part is a sparse sum of 32 of 8192 unit features per row, drawn with Zipf
    frequencies (real SAE latents fire with power-law frequencies), plus 10 % noise.
    """
    rng = np.random.default_rng(seed)
    d, n_atoms, active = n_features, 8192, 32
    mean = rng.normal(0.0, 2.0, d)
    mean[rng.choice(d, 2, replace=False)] = [80.0, -77.0]
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(d))  # anisotropic feature directions
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    atoms = (rng.normal(size=(n_atoms, d)) * spectrum) @ basis.T
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    cdf = np.cumsum(1.0 / (np.arange(n_atoms) + 10.0))
    cdf /= cdf[-1]
    out = np.empty((n_rows, d), dtype=np.float32)
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        idx = np.searchsorted(cdf, rng.random((rows, active)))  # (rows, active) Zipf ids
        mag = rng.exponential(1.0, (rows, active))  # (rows, active)
        x = np.einsum("ra,rad->rd", mag, atoms[idx]) if rows <= 4096 else _sparse_sum(idx, mag, atoms)
        x *= 110.0 / np.median(np.linalg.norm(x, axis=1))
        x += rng.normal(0.0, 11.0 / np.sqrt(d), x.shape)
        out[start:start + rows] = x + mean
    return out


def _sparse_sum(idx: np.ndarray, mag: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """``sum_j mag[r, j] atoms[idx[r, j]]`` per row via a CSR product (no (rows, a, d) copy)."""
    import scipy.sparse as sp

    rows, active = idx.shape
    coef = sp.csr_matrix((mag.ravel(), idx.ravel(), np.arange(0, rows * active + 1, active)),
                         shape=(rows, atoms.shape[0]))
    return np.asarray(coef @ atoms)


def load_activations(source: str, n_rows: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(X (n_rows, d) float32, provenance) from ``source``.

    ``source``: a path to a ``.npy`` of activations (rows drawn with a fixed seed), or
    ``"synthetic"``, or ``"auto"``: ``sklearn_hsae.datasets.fetch_text_activations``
    (SmolLM2-135M layer 15) when the installed package has it, else synthetic.
    """
    if source == "auto":
        try:
            from sklearn_hsae.datasets import fetch_text_activations
        except ImportError:
            print("sklearn_hsae.datasets.fetch_text_activations not available: synthetic data.")
            source = "synthetic"
        else:
            data = fetch_text_activations(layer=15)
            return _rows(np.asarray(data.X, dtype=np.float32), n_rows, seed), {
                "kind": "real", "origin": "fetch_text_activations(layer=15)",
                "model": data.model, "layer": data.layer, "n_available": len(data.X)}
    if source == "synthetic":
        X = synthetic_activations(n_rows, seed=seed)
        return X, {"kind": "synthetic", "origin": "benchmarks._common.synthetic_activations",
                   "seed": seed}
    path = Path(source)
    X = np.load(path, mmap_mode="r")
    meta_path = path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return _rows(X, n_rows, seed), {"kind": "real", "origin": str(path), "n_available": len(X),
                                    **{k: meta[k] for k in ("model", "layer") if k in meta}}


def _rows(X: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """``n_rows`` rows in a fixed random order; rows repeat when X is shorter."""
    order = np.random.default_rng(seed).permutation(len(X))
    order = np.resize(order, n_rows)
    return np.ascontiguousarray(np.asarray(X)[order], dtype=np.float32)


# ------------------------------------------------------------------- memory
def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """Samples /proc/self/status in a thread: peaks of RSS, anonymous and file RSS.

    VmHWM gives the exact peak of the total only; the split into anonymous memory (our
    arrays) and file pages (a memmap being read) needs sampling.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            status = proc_status()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], status[key])
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
