"""Which kernels run the routed child path, and inductor's versions of two of them.

Every op of the child path that reads input rows per (row, parent) pair is a
contraction over tiles of pairs that share an expert (see ``grouped.py``):

- ``pair_dot(table, W, rows, expert)[t, i] = W[expert[t]] @ table[rows[t, i]]``, shape
  (n_tiles, T, s): the down-projection (table = centred inputs, W = ``W_down``) and, in
  the backward of the up-projection, the gradient of the subspace vectors (table =
  output gradient, W = ``W_up``);
- ``tile_outer(g, table, rows)[t] = sum_i g[t, i] (x) table[rows[t, i]]``, shape
  (n_tiles, s, d): the per-tile weight gradients of ``W_down`` and ``W_up``;
- the per-row sums of the up-projection (and of the input gradient).

Eagerly each gathers ``table[rows]``, a (n_tiles, T, d) copy (~0.3 GB at B = 4096, k =
32, d = 576) for a 9 MB input block, then runs a ``bmm``. :func:`kernels_for` picks, per
step, one of three implementations:

- "native" (CPU): ``native.py``'s C loops, which read each row once in place; also the
  routing and the child selection. Built once per machine (~0.3 s), cached on disk.
- "inductor" (CUDA): ``torch.compile`` (Triton) of the two contractions below, with
  dynamic shapes so the tile count, which changes every step, does not recompile;
  inductor caches its kernels on disk. Both reduce every output element in a fixed
  order, so they are deterministic; on CPU (C++ backend) they were 2-3x slower than the
  native loops, so CPU never picks them.
- "eager": torch ops over the gathered copies; no compiler needed.

Any failure (no compiler, no Triton, a build or inductor error) warns once and the eager
kernels take over; ``compile=False`` never builds or imports anything.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import Tensor

from . import native

# Multiply-adds per step of the child path below which "auto" stays eager on CUDA. Set
# from inductor's CPU backend on this project's 2-core machine (median step, routed
# k=32, s=4, d=576, inductor vs eager): B=4096, 2048 parents 0.64 vs 0.83 s; 1024
# parents 0.47 vs 0.51 s; B=2048 0.30 vs 0.31 s; B=1024 0.16 vs 0.15 s. No GPU has
# measured it yet; below that size compiling costs an inductor import and ~25 s.
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
            "training and encoding continue with the eager kernels (equal to float rounding, slower). "
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
                f"building sklearn_hsae's C kernels (kernels.c) failed ({native.LIBRARY.error}); "
                "training and encoding continue with the eager kernels (equal to float rounding, slower). "
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
