"""The routed child path's two gather-multiply-reduce kernels, eager or compiled.

Every op of the child path that reads input rows per (row, parent) pair is one of two
contractions over tiles of pairs that share an expert (see ``grouped.py``):

- ``pair_dot(table, W, rows, expert)[t, i] = W[expert[t]] @ table[rows[t, i]]``, shape
  (n_tiles, T, s): the down-projection (table = centred inputs, W = ``W_down``) and, in
  the backward of the up-projection, the gradient of the subspace vectors (table =
  output gradient, W = ``W_up``);
- ``tile_outer(g, table, rows)[t] = sum_i g[t, i] (x) table[rows[t, i]]``, shape
  (n_tiles, s, d): the per-tile weight gradients of ``W_down`` and ``W_up``.

Eagerly each gathers ``table[rows]``, a (n_tiles, T, d) copy (~0.3 GB at B = 4096, k =
32, d = 576) for a 9 MB input block, then runs a ``bmm``. ``torch.compile`` (inductor:
C++ through the system compiler on CPU, Triton on CUDA) turns each into one loop nest
that reads the rows where they are and never writes the copy. Both kernels reduce every
output element in a fixed order inside one thread, so compiled CPU fits stay bitwise
reproducible; they round differently from ``bmm`` (agreement ~1e-6 relative).

Compilation is optional: ``compile=False`` never imports inductor, ``"auto"`` compiles
only steps large enough to repay it (:func:`use_compiled`), and any failure (no
compiler, no Triton, an inductor error) warns once and the eager kernels take over.
Inductor caches compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``, by default under
the system temp folder), so a second process reuses them; shapes are dynamic, so the
tile count, which changes every step, does not trigger recompiles.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import Tensor

from . import native

# Multiply-adds per step of the child path below which "auto" stays eager. Measured on
# this project's 2-core CPU (median step, routed k=32, s=4, d=576, compiled vs eager):
# B=4096, 2048 parents 0.64 vs 0.83 s (interleaved, benchmarks/train_speed.py); B=4096,
# 1024 parents 0.47 vs 0.51 s; B=2048 0.30 vs 0.31 s; B=1024 0.16 vs 0.15 s (512
# parents) and 0.20 vs 0.21 s (1024). Below B=4096-sized steps compiling buys nothing
# and costs an inductor import and ~25 s of compilation.
_AUTO_MIN_PAIR_MACS = 1.5e9


def eager_pair_dot(table: Tensor, W: Tensor, rows: Tensor, expert: Tensor) -> Tensor:
    """(n_tiles, T, s) via a gather of rows and ``bmm`` (the fallback of ``pair_dot``)."""
    n_tiles, T = rows.shape
    gathered = table.index_select(0, rows.reshape(-1))
    return torch.bmm(gathered.view(n_tiles, T, -1), W.index_select(0, expert).transpose(1, 2))


def eager_tile_outer(g: Tensor, gathered: Tensor) -> Tensor:
    """(n_tiles, s, d) from g (n_tiles, T, s) and the gathered rows (n_tiles, T, d)."""
    return torch.bmm(g.transpose(1, 2), gathered)


def _pair_dot(table: Tensor, W: Tensor, rows: Tensor, expert: Tensor) -> Tensor:
    return (table[rows][:, :, None, :] * W[expert][:, None, :, :]).sum(-1)


def _tile_outer(g: Tensor, table: Tensor, rows: Tensor) -> Tensor:
    return (g[:, :, :, None] * table[rows][:, :, None, :]).sum(1)


class _Compiled:
    """The compiled kernels of this process, built on first use; ``failed`` after any
    error, when every caller falls back to the eager kernels."""

    def __init__(self):
        self.kernels = None
        self.failed = False

    def get(self):
        if self.kernels is None:
            self.kernels = (torch.compile(_pair_dot, dynamic=True), torch.compile(_tile_outer, dynamic=True))
            inductor_config = sys.modules.get("torch._inductor.config")
            if inductor_config is not None and torch.are_deterministic_algorithms_enabled():
                inductor_config.deterministic = True
        return self.kernels

    def fail(self, exc: BaseException) -> None:
        self.failed = True
        warnings.warn(
            f"torch.compile of the routed child path failed ({type(exc).__name__}: {str(exc)[:300]}); "
            "training and encoding continue with the eager kernels (same results, slower). "
            "Pass compile=False to skip the attempt.",
            RuntimeWarning, stacklevel=4,
        )


COMPILED = _Compiled()


def compiler_available(device: torch.device) -> bool:
    """Whether compiled kernels can be built here: a C compiler for ``native.py``'s
    kernels on CPU, Triton for inductor's on CUDA."""
    if device.type == "cpu":
        return native.compiler() is not None
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


class _NativeWarning:
    """Warn once per process when the native kernels could not be built."""

    warned = False

    @classmethod
    def warn(cls) -> None:
        if not cls.warned:
            cls.warned = True
            warnings.warn(
                f"building the routed child path's C kernels failed ({native.LIBRARY.error}); "
                "training and encoding continue with the eager kernels (same results, slower). "
                "Pass compile=False to skip the attempt.",
                RuntimeWarning, stacklevel=5,
            )


def kernels_for(choice, device: torch.device, pair_macs: float) -> str:
    """The child path's kernels, "native", "inductor" or "eager", for ``compile``
    (True, False or "auto") and a step of ``pair_macs`` multiply-adds on ``device``.

    On CPU, True and "auto" take ``native.py``'s C kernels (a ~0.3 s build, once per
    machine), which beat eager torch at every size measured; without a compiler "auto"
    stays eager quietly, True warns. On CUDA they take inductor's kernels, and "auto"
    only for steps large enough to repay the compilation.
    """
    if choice is False:
        return "eager"
    if device.type == "cpu":
        if choice == "auto" and native.compiler() is None:
            return "eager"
        if native.available():
            return "native"
        _NativeWarning.warn()
        return "eager"
    if device.type != "cuda" or COMPILED.failed:
        return "eager"
    if choice is True or (pair_macs >= _AUTO_MIN_PAIR_MACS and compiler_available(device)):
        return "inductor"
    return "eager"


def pair_dot(table: Tensor, W: Tensor, rows: Tensor, expert: Tensor) -> Tensor | None:
    """The compiled ``pair_dot``; None when compilation failed (the caller goes eager)."""
    if COMPILED.failed:
        return None
    try:
        return COMPILED.get()[0](table, W, rows, expert)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: go eager
        COMPILED.fail(exc)
        return None


def tile_outer(g: Tensor, table: Tensor, rows: Tensor) -> Tensor | None:
    """The compiled ``tile_outer``; None when compilation failed (the caller goes eager)."""
    if COMPILED.failed:
        return None
    try:
        return COMPILED.get()[1](g, table, rows)
    except Exception as exc:  # noqa: BLE001
        COMPILED.fail(exc)
        return None
