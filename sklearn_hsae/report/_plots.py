"""The report's PNGs: feature densities, FVU against L, and one parent's subtree.

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot, so
writing a report opens no window and leaves no global figure state behind.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np

from ._subtree import LABEL_CHARS

_ROW_INCHES = 0.34  # one leaf row of a subtree: a two-line 7-pt label and a gap
_COLUMN_INCHES = 0.095 * LABEL_CHARS  # one level of a subtree: a label line at 7 pt


def png(fig, dpi=100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
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


def subtree_plot(layout, labels: dict, dead: set) -> bytes:
    """A subtree left to right: a text box per node, an arrow per parent -> child edge.

    ``layout`` is a :class:`~sklearn_hsae.report._subtree.SubtreeLayout`,
    ``labels[(level, latent)]`` a node's text; nodes in ``dead`` are grey. The figure
    grows with the subtree: a column per level, a row per leaf.
    """
    from matplotlib.figure import Figure

    n_columns = int(layout.xy[:, 0].max()) + 1
    n_rows = int(layout.xy[:, 1].max()) + 1
    size = (_COLUMN_INCHES * n_columns + 0.3, _ROW_INCHES * n_rows + 0.1)
    fig = Figure(figsize=size)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, n_columns + 0.3 / _COLUMN_INCHES)
    ax.set_ylim(n_rows - 0.5, -0.5)  # the first leaf on top
    ax.set_axis_off()
    boxes = {}
    for node, (x, y) in zip(layout.nodes, layout.xy):
        grey = node in dead
        boxes[node] = ax.text(
            x + 0.05, y, labels[node], ha="left", va="center", fontsize=7, parse_math=False,
            color="0.5" if grey else "0.1",
            bbox=dict(boxstyle="round,pad=0.3", facecolor="#f2f4f7" if grey else "#eef2ff",
                      edgecolor="0.75" if grey else "#818cf8"),
        )
    for parent, child in layout.edges:  # from the parent box's right edge to the child's left
        ax.annotate("", xy=(0, 0.5), xycoords=boxes[child], xytext=(1, 0.5),
                    textcoords=boxes[parent],
                    arrowprops=dict(arrowstyle="-|>", color="0.45", linewidth=0.8,
                                    shrinkA=2, shrinkB=2))
    with warnings.catch_warnings():
        # Tokens come in any script; glyphs DejaVu Sans lacks are drawn as boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        # Past ~2000 leaves a 100-dpi PNG would exceed the 2**16 px a side that Agg
        # draws; such a subtree is drawn at a lower resolution instead.
        return png(fig, dpi=min(100, 60_000 / max(size)))


def data_uri(image: bytes) -> str:
    """A PNG inline, for an ``<img src=...>``: the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(image).decode()
