"""The CPU kernels of ``kernels.c``: built once per machine, loaded with ctypes.

Why not torch ops: each of the routed child path's row-reading contractions (see
``fused.py``) has s = 4-8 outputs per input row. ``index_select`` + ``bmm`` writes a
(n_tiles, T, d) copy of the rows first; inductor's kernels read the rows in place but
re-read each one per output or pay per-element index arithmetic; ``embedding_bag``'s
per-row sums read an expert's s x d block once per pair. The loops of ``kernels.c``
read each row once into s accumulators, sum rows per expert
with the expert's block in L1, and also do the routing (a counting sort) and the child
selection. Measured at B = 4096, k = 32, 2048 experts, d = 576, 2 threads, medians of
7 calls: the down-projection 0.012 s (inductor 0.063-0.068 s, gather + ``bmm`` 0.28 s);
the per-expert weight gradient 0.012-0.014 s (inductor plus the per-tile sum 0.074 s);
the up-projection's per-row sum 0.010-0.013 s (``embedding_bag`` 0.024-0.034 s).

Building: the system C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``), ~0.3 s, into a
shared library cached under ``SKLEARN_HSAE_CACHE`` (default ``~/.cache/sklearn_hsae``),
keyed by the source, the compiler, its flags and this CPU's feature flags (the library
is built with ``-march=native`` for the CPU it runs on). ``available()`` is False when
anything fails; the caller warns and stays eager. Parallelism: disjoint output ranges
of one call, as many as ``torch.get_num_threads()``, run on the threads of torch's own
OpenMP runtime where the compiler has OpenMP and the library's runtime is torch's
(``-fopenmp`` links the libgomp torch loaded); otherwise, and in a forked child, on the
calling thread plus a small thread pool (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=fast", "-fPIC", "-shared", "-std=c99")
# First choice: the ranges of a call on OpenMP threads (see RANGES in kernels.c); a
# compiler without OpenMP gets the plain build and Python's thread pool.
_OPENMP_FLAGS = ("-fopenmp", *_FLAGS)
# Below this many multiply-adds a call runs on the calling thread alone: handing work to
# the thread pool costs ~20-50 us, the whole call at this size about as much (OpenMP's
# awake threads cost less; lowering this to 2e5 there changed no step measurably).
_MIN_SPLIT = 2_000_000

_P, _L = ctypes.c_void_p, ctypes.c_int64
# Every kernel: its tensors, the range bounds and their count, then its sizes.
_SIGNATURES = {
    "pair_dot": [_P] * 6 + [_L] * 6,
    "expert_outer": [_P] * 6 + [_L] * 6,
    "dot_outer": [_P] * 8 + [_L] * 6,
    "pair_sum": [_P] * 7 + [_L] * 6,
    "child_fwd": [_P] * 9 + [_L] * 7,
    "child_bwd": [_P] * 12 + [_L] * 6,
}
_ROUTING = {
    "route_count": ([_P, _P, _L, _L, _P], ctypes.c_int64),
    "route_fill": ([_P, _P] + [_L] * 4 + [_P] * 7, ctypes.c_int),
    "kernels_openmp": ([], ctypes.c_int),
    "kernels_max_threads": ([], ctypes.c_int),
}


@functools.cache
def compiler() -> str | None:
    """The C compiler native kernels are built with, or None (looked up once: a PATH
    search per training step cost ~0.2 ms)."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def cache_dir() -> Path:
    root = os.environ.get("SKLEARN_HSAE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "sklearn_hsae"


def _build(cc: str, flags: tuple[str, ...] = _OPENMP_FLAGS) -> Path:
    """Compile kernels.c into the cache (atomically) unless an identical build is there.
    A failed build leaves a ``.failed`` mark, so later processes do not retry it."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags).encode(),
                                     platform.machine().encode(), _cpu_flags().encode()]))
    target = cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    failed = target.with_suffix(".failed")
    if target.exists():
        return target
    if failed.exists():
        raise subprocess.CalledProcessError(1, cc, stderr=failed.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], check=True, capture_output=True,
                       text=True, timeout=120)
        os.replace(tmp, target)  # another process may have won the race: same bytes
    except subprocess.CalledProcessError as exc:
        failed.write_text(str(exc.stderr)[:2000])
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load(cc: str):
    """The OpenMP build where the compiler has OpenMP, else the plain one."""
    try:
        return ctypes.CDLL(str(_build(cc, _OPENMP_FLAGS)))
    except (OSError, subprocess.CalledProcessError):
        return ctypes.CDLL(str(_build(cc, _FLAGS)))


def _shares_torch_openmp(lib) -> bool:
    """Whether the library's OpenMP runtime is torch's own: a thread count set through
    torch shows in the library (a second runtime would bring a second set of threads,
    spinning where torch's want to run, so the library then keeps to its thread pool)."""
    if not lib.kernels_openmp():
        return False
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(previous + 3)
        return lib.kernels_max_threads() == previous + 3
    finally:
        torch.set_num_threads(previous)


class _Library:
    """The loaded kernels of this process (built on first use); ``error`` after a failure."""

    def __init__(self):
        self.lib = None
        self.error: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.openmp = False  # ranges on torch's OpenMP threads, else on self.pool
        self.forked = False  # a forked child's OpenMP team is unusable (see below)

    def get(self):
        if self.lib is None and self.error is None:
            try:
                cc = compiler()
                if cc is None:
                    raise OSError("no C compiler (cc, gcc or clang) on PATH")
                lib = _load(cc)
                for name, args in _SIGNATURES.items():
                    for suffix in ("f32", "f64"):
                        fn = getattr(lib, f"{name}_{suffix}")
                        fn.argtypes, fn.restype = args, ctypes.c_int
                for name, (args, restype) in _ROUTING.items():
                    getattr(lib, name).argtypes, getattr(lib, name).restype = args, restype
                self.openmp = not self.forked and _shares_torch_openmp(lib)
                self.lib = lib
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", None) or str(exc)
                self.error = f"{type(exc).__name__}: {str(detail).strip()[:300]}"
        return self.lib

    def run(self, fn, pointers: tuple, ranges: list[tuple[int, int]], tail: tuple) -> None:
        """Run fn on the contiguous ranges: in one call on OpenMP threads, or one call per
        range, the first on this thread and the others on the pool."""
        bounds = (ctypes.c_int64 * (len(ranges) + 1))(ranges[0][0], *(hi for _, hi in ranges))
        at = ctypes.addressof(bounds)
        if self.openmp or len(ranges) == 1:
            codes = [fn(*pointers, at, len(ranges), *tail)]
        else:
            if self.pool is None or self.pool._max_workers < len(ranges) - 1:
                self.pool = ThreadPoolExecutor(max(len(ranges) - 1, os.cpu_count() or 1))
            size = ctypes.sizeof(ctypes.c_int64)
            futures = [self.pool.submit(fn, *pointers, at + i * size, 1, *tail)
                       for i in range(1, len(ranges))]
            codes = [fn(*pointers, at, 1, *tail)] + [f.result() for f in futures]
        if any(codes):
            raise IndexError("routed kernel: an index of the routing is out of range")


LIBRARY = _Library()


def _after_fork_in_child() -> None:
    """A forked child inherits the pool object and OpenMP's team but none of their
    threads (libgomp then waits forever on the parent's, in torch's own ops too): the
    child starts a fresh pool and keeps to it."""
    LIBRARY.pool = None
    LIBRARY.openmp = False
    LIBRARY.forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def available() -> bool:
    """Whether the native kernels could be built and loaded here (builds them once)."""
    return LIBRARY.get() is not None


def _parts(work: float, n: int) -> int:
    return max(1, min(torch.get_num_threads(), n, int(work // _MIN_SPLIT) or 1))


def _even(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a] or [(0, 0)]


def _suffix(t: Tensor, other: Tensor) -> str:
    if t.dtype != other.dtype or t.device.type != "cpu" or other.device.type != "cpu":
        raise TypeError(f"native routed kernels take CPU tensors of one dtype, got "
                        f"{t.dtype} on {t.device} and {other.dtype} on {other.device}")
    if t.dtype == torch.float32:
        return "f32"
    if t.dtype == torch.float64:
        return "f64"
    raise TypeError(f"native routed kernels take float32 or float64, got {t.dtype}")


def pair_dot(table: Tensor, W: Tensor, rows: Tensor, expert: Tensor) -> Tensor:
    """``out[t, i] = W[expert[t]] @ table[rows[t, i]]``, (n_tiles, T, s); row
    ``len(table)`` (padding) reads as zeros."""
    n_tiles, T = rows.shape
    m, s, d = W.shape
    table, W, rows, expert = (t.contiguous() for t in (table, W, rows, expert))
    out = table.new_empty(n_tiles, T, s)
    fn = getattr(LIBRARY.get(), f"pair_dot_{_suffix(table, W)}")
    ranges = _even(n_tiles, _parts(rows.numel() * s * d, n_tiles))
    LIBRARY.run(fn, (table.data_ptr(), W.data_ptr(), rows.data_ptr(), expert.data_ptr(),
                     out.data_ptr()), ranges, (T, s, d, table.shape[0], m))
    return out


def _output(out: Tensor | None, like: Tensor, shape: tuple) -> Tensor:
    if out is None:
        return like.new_empty(shape)
    if tuple(out.shape) != shape or out.dtype != like.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {like.dtype} tensor of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


def _expert_ranges(start: Tensor, parts: int) -> list[tuple[int, int]]:
    """Split the experts into ``parts`` runs with about the same number of tiles each."""
    m = start.shape[0] - 1
    if parts == 1:
        return [(0, m)]
    n_tiles = int(start[-1])
    cut = torch.searchsorted(start, torch.arange(1, parts) * n_tiles // parts).tolist()
    bounds = [0, *cut, m]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a] or [(0, m)]


def expert_outer(g: Tensor, table: Tensor, rows: Tensor, start: Tensor,
                 out: Tensor | None = None) -> Tensor:
    """``out[p] = sum over p's tiles t and slots i of g[t, i] (x) table[rows[t, i]]``,
    (m, s, d); ``start`` (m + 1,) the first tile of every expert; row ``len(table)``
    reads as zeros. ``out``: a contiguous (m, s, d) tensor to write into."""
    n_tiles, T = rows.shape
    s, d, m = g.shape[2], table.shape[1], start.shape[0] - 1
    g, table, rows, start = (t.contiguous() for t in (g, table, rows, start))
    out = _output(out, table, (m, s, d))
    fn = getattr(LIBRARY.get(), f"expert_outer_{_suffix(table, g)}")
    ranges = _expert_ranges(start, _parts(rows.numel() * s * d, m))
    LIBRARY.run(fn, (g.data_ptr(), table.data_ptr(), rows.data_ptr(), start.data_ptr(),
                     out.data_ptr()), ranges, (T, s, d, table.shape[0], n_tiles))
    return out


def dot_outer(g: Tensor, table: Tensor, W: Tensor, rows: Tensor, start: Tensor,
              outer: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(pair_dot(table, W, rows, expert), expert_outer(g, table, rows, start))`` in one
    pass over the rows (the backward of the up-projection); ``outer`` as ``out`` there."""
    n_tiles, T = rows.shape
    m, s, d = W.shape
    g, table, W, rows, start = (t.contiguous() for t in (g, table, W, rows, start))
    dot, outer = table.new_empty(n_tiles, T, s), _output(outer, table, (m, s, d))
    fn = getattr(LIBRARY.get(), f"dot_outer_{_suffix(table, W)}")
    _suffix(table, g)
    ranges = _expert_ranges(start, _parts(2 * rows.numel() * s * d, m))
    LIBRARY.run(fn, (g.data_ptr(), table.data_ptr(), W.data_ptr(), rows.data_ptr(),
                     start.data_ptr(), dot.data_ptr(), outer.data_ptr()),
                ranges, (T, s, d, table.shape[0], n_tiles))
    return dot, outer


def pair_sum(v: Tensor, W: Tensor, rows: Tensor, start: Tensor, n_rows: int,
             base: Tensor | None = None) -> Tensor:
    """``out[b] = base[b] + sum over the tile slots (t, i) of row b of v[t, i] @
    W[expert[t]]``, (n_rows, d), from tile-layout v (n_tiles, T, s); padding slots hold
    row ``n_rows``; no ``base``: zeros."""
    n_tiles, T = rows.shape
    m, s, d = W.shape
    v, W, rows, start = (t.contiguous() for t in (v, W, rows, start))
    if base is not None:
        if tuple(base.shape) != (n_rows, d):
            raise ValueError(f"base must have shape {(n_rows, d)}, got {tuple(base.shape)}")
        base = base.contiguous()
        _suffix(v, base)
    out = v.new_empty(n_rows, d)
    fn = getattr(LIBRARY.get(), f"pair_sum_{_suffix(v, W)}")
    ranges = _even(n_rows, _parts(rows.numel() * s * d, n_rows))
    LIBRARY.run(fn, (v.data_ptr(), W.data_ptr(), rows.data_ptr(), start.data_ptr(),
                     None if base is None else base.data_ptr(), out.data_ptr()),
                ranges, (T, s, d, n_rows, m))
    return out


def route_counts(active: Tensor, indices: Tensor, n_experts: int) -> tuple[Tensor, int]:
    """Active slots per expert (E,) and their total, from active (B, k) bool and indices."""
    active, indices = active.contiguous(), indices.contiguous()
    counts = torch.empty(n_experts, dtype=torch.long)
    total = LIBRARY.get().route_count(active.data_ptr(), indices.data_ptr(), active.numel(),
                                      n_experts, counts.data_ptr())
    if total < 0:
        raise IndexError("routed kernel: an expert index is out of range")
    return counts, int(total)


def route_fill(active: Tensor, indices: Tensor, start: Tensor, T: int, n_pairs: int):
    """The tile layout of the active slots: rows, pair (n_tiles * T,), slot_pos (B * k,),
    pair_pos (n_pairs,), expert (n_tiles,); see ``route_fill`` in kernels.c."""
    B, k = active.shape
    E = start.shape[0] - 1
    n_tiles = int(start[-1])
    active, indices, start = active.contiguous(), indices.contiguous(), start.contiguous()
    rows = torch.full((n_tiles * T,), B, dtype=torch.long)
    pair = torch.full((n_tiles * T,), n_pairs, dtype=torch.long)
    slot_pos = torch.zeros(B * k, dtype=torch.long)
    pair_pos = torch.empty(n_pairs, dtype=torch.long)
    expert = torch.empty(n_tiles, dtype=torch.long)
    fill = torch.empty(E, dtype=torch.long)
    LIBRARY.get().route_fill(active.data_ptr(), indices.data_ptr(), B * k, k, E, T, start.data_ptr(),
                             fill.data_ptr(), rows.data_ptr(), pair.data_ptr(), slot_pos.data_ptr(),
                             pair_pos.data_ptr(), expert.data_ptr())
    return rows, pair, slot_pos, pair_pos, expert


def child_forward(u: Tensor, E: Tensor, D: Tensor, rows: Tensor, expert: Tensor, n_rows: int):
    """Each active parent's best child on u (n_tiles, T, s): (v (n_tiles, T, s), act
    (n_tiles, T), arg (n_tiles, T) int64); slots of row ``n_rows`` are padding. See
    ``child_fwd`` in kernels.c."""
    n_tiles, T, s = u.shape
    m, C, _ = E.shape
    fn = getattr(LIBRARY.get(), f"child_fwd_{_suffix(u, E)}")
    _suffix(u, D)
    lanes = 32 // u.element_size()
    padded = -(-C // lanes) * lanes
    Et = E.new_zeros(m, s, padded)  # transposed, zeros past C: the kernel's vector layout
    Et[:, :, :C] = E.transpose(1, 2)
    u, D, rows, expert = (t.contiguous() for t in (u, D, rows, expert))
    v, act = torch.empty_like(u), u.new_empty(n_tiles, T)
    arg = torch.empty(n_tiles, T, dtype=torch.long)
    ranges = _even(n_tiles, _parts(rows.numel() * C * s, n_tiles))
    LIBRARY.run(fn, (u.data_ptr(), Et.data_ptr(), D.data_ptr(), expert.data_ptr(), rows.data_ptr(),
                     v.data_ptr(), act.data_ptr(), arg.data_ptr()), ranges,
                (T, s, C, padded, n_rows, m))
    return v, act, arg


def child_backward(grad_v: Tensor, u: Tensor, E: Tensor, D: Tensor, act: Tensor, arg: Tensor,
                   rows: Tensor, start: Tensor, n_rows: int):
    """Gradients of ``child_forward``'s v with respect to u, E and D."""
    n_tiles, T, s = u.shape
    m, C, _ = E.shape
    tensors = (grad_v, u, E, D, act, arg, rows, start)
    grad_v, u, E, D, act, arg, rows, start = (t.contiguous() for t in tensors)
    grad_u, grad_E, grad_D = torch.empty_like(u), torch.empty_like(E), torch.empty_like(D)
    fn = getattr(LIBRARY.get(), f"child_bwd_{_suffix(u, grad_v)}")
    ranges = _expert_ranges(start, _parts(rows.numel() * 4 * s, m))
    LIBRARY.run(fn, (grad_v.data_ptr(), u.data_ptr(), E.data_ptr(), D.data_ptr(), act.data_ptr(),
                     arg.data_ptr(), rows.data_ptr(), start.data_ptr(), grad_u.data_ptr(),
                     grad_E.data_ptr(), grad_D.data_ptr()), ranges, (T, s, C, n_rows, n_tiles))
    return grad_u, grad_E, grad_D
