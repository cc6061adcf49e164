"""The top of the report: FVU, L0, dead and dense latents per level, and the two plots."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..metrics import dense_fraction, fvu, l0, level_names
from ._plots import curve_plot, data_uri, density_plot

_CURVE_POINTS = 12  # L values on the FVU-vs-L curve


class Summary(NamedTuple):
    """The numbers and plots of the page's summary, one entry per level unless noted."""

    l0: list
    dead: list
    dense: list
    threshold: float
    fvu: list
    """(label, FVU) per reconstruction: one for added-up levels, one per level for a tree."""
    pngs: dict
    """``{"density": ..., "fvu_l0": ...}``: the two plots as PNG bytes."""
    n_curve_rows: int
    """Rows the FVU-vs-L curve was computed on."""


def reconstructions(estimator, levels, names):
    """(label, codes, decode) for every reconstruction the estimator makes.

    Levels that add up (routed hierarchy, flat SAE) make one reconstruction from all
    codes; a tree, whose every level is a full SAE (``intercept_by_level_``), makes one
    per level, from that level's codes alone.
    """
    if len(levels) > 1 and hasattr(estimator, "intercept_by_level_"):
        return [
            (name, level, lambda Z, i=i: np.asarray(Z @ estimator.components_by_level_[i])
             + estimator.intercept_by_level_[i])
            for i, (name, level) in enumerate(zip(names, levels))
        ]
    label = "all levels" if len(levels) > 1 else "codes"
    return [(label, sp.hstack(levels, format="csr"), estimator.inverse_transform)]


def top_l_curve(decode, X, codes: sp.csr_matrix):
    """(mean codes kept per row, FVU) when every row keeps only its L largest codes.

    Decoder directions are unit-norm in this package, so |code| is the size of a latent's
    contribution; ranking is across the codes of one reconstruction. L runs from 1 to the
    largest number of codes of a row, where the curve meets the full (L0, FVU) point.
    """
    counts = np.diff(codes.indptr)  # (n,) active latents per row
    row = np.repeat(np.arange(codes.shape[0]), counts)  # (nnz,)
    order = np.lexsort((-np.abs(codes.data), row))  # by row, then by decreasing |code|
    rank = np.empty(codes.nnz, dtype=np.int64)
    rank[order] = np.arange(codes.nnz) - codes.indptr[row[order]]  # (nnz,) rank in its row
    largest = max(int(counts.max(initial=0)), 1)
    kept, fvus = [], []
    for L in np.unique(np.round(np.geomspace(1, largest, _CURVE_POINTS)).astype(int)):
        truncated = sp.csr_matrix((codes.data * (rank < L), codes.indices, codes.indptr), codes.shape)
        kept.append(np.minimum(counts, L).mean())
        fvus.append(fvu(X, decode(truncated)))
    return np.array(kept), np.array(fvus)


def summarize(estimator, X, levels, densities, dense_threshold, max_curve_rows) -> Summary:
    """Every number and plot of the summary; the curve on an evenly spaced row subset."""
    names = level_names(len(levels))
    recons = reconstructions(estimator, levels, names)
    fvus = [(label, fvu(X, decode(codes))) for label, codes, decode in recons]
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(max_curve_rows, X.shape[0])).astype(int))
    sample = np.asarray(X[rows])
    curves = [
        (label, *top_l_curve(decode, sample, codes[rows]), (l0([codes])[0], value))
        for (label, codes, decode), (_, value) in zip(recons, fvus)
    ]
    pngs = {
        "density": density_plot(densities, names, X.shape[0], dense_threshold),
        "fvu_l0": curve_plot(curves),
    }
    return Summary(l0=l0(levels), dead=[float(np.mean(d == 0)) for d in densities],
                   dense=dense_fraction(levels, threshold=dense_threshold),
                   threshold=dense_threshold, fvu=fvus, pngs=pngs, n_curve_rows=len(rows))


def summary_html(summary: Summary, levels, unassigned) -> str:
    """The table per level; ``unassigned`` (latents without a parent) only for trees."""
    names = level_names(len(levels))
    tree = unassigned is not None
    rows = "".join(
        f"<tr><td>{n}</td><td>{lv.shape[1]}</td><td>{a:.2f}</td><td>{d:.1%}</td>"
        f"<td>{s:.1%}</td>" + (f"<td>{unassigned[i]}</td>" if tree else "") + "</tr>"
        for i, (n, lv, a, d, s) in enumerate(
            zip(names, levels, summary.l0, summary.dead, summary.dense))
    )
    return (
        '<table class="summary"><tr><th>level</th><th>latents</th><th>L0</th><th>dead</th>'
        f"<th>dense (&gt; {summary.threshold:g})</th>"
        + ("<th>without parent</th>" if tree else "") + f"</tr>{rows}</table>"
    )


def plots_html(summary: Summary) -> str:
    """The two plots, inline, with their captions."""
    captions = (
        ("density", "feature density histogram",
         "Feature density per level; dead latents are counted in the legend, the dotted "
         "line is the dense threshold."),
        ("fvu_l0", "FVU against L",
         f"FVU when each token keeps only its L largest codes, L = 1, 2, ..., against "
         f"the mean number kept ({summary.n_curve_rows} tokens); the star is the estimator "
         "with all its codes."),
    )
    return "".join(
        f'<figure><img alt="{alt}" src="{data_uri(summary.pngs[key])}">'
        f"<figcaption>{caption}</figcaption></figure>"
        for key, alt, caption in captions
    )
