"""The report's PNGs: feature densities and FVU against L.

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot, so
writing a report opens no window and leaves no global figure state behind.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def density_plot(densities, names, n_rows, threshold) -> bytes:
    """Histogram of log10 feature density per level, dead latents counted in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.3), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(np.log10(1.0 / max(n_rows, 2)), 0.0, 41)
    for density, name in zip(densities, names):
        alive = density[density > 0]
        label = f"{name}: {density.size - alive.size} of {density.size} dead"
        ax.hist(np.log10(alive), bins=bins, histtype="step", linewidth=1.6, label=label)
    ax.axvline(np.log10(threshold), color="0.4", linestyle=":", linewidth=1)
    ax.set_xlabel("log10 feature density (fraction of tokens)")
    ax.set_ylabel("latents")
    ax.legend(fontsize=8, frameon=False)
    return png(fig)


def curve_plot(curves) -> bytes:
    """curves: (label, kept, fvus, (L0, FVU) of all codes) per reconstruction."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(5.6, 3.3), layout="constrained")
    ax = fig.subplots()
    for i, (label, kept, fvus, point) in enumerate(curves):
        prefix = f"{label}: " if len(curves) > 1 else ""
        ax.plot(kept, fvus, marker="o", markersize=4, color=f"C{i}",
                label=f"{prefix}each token keeps its L largest codes")
        ax.plot(*point, marker="*", markersize=13, linestyle="none", color=f"C{i}",
                label=f"{prefix}all codes: L0 {point[0]:.2f}, FVU {point[1]:.3f}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("L0: codes kept per token (mean)")
    ax.set_ylabel("FVU")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    return png(fig)


def data_uri(image: bytes) -> str:
    """A PNG inline, for an ``<img src=...>``: the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(image).decode()
