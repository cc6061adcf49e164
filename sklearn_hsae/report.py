"""A self-contained HTML page to browse a fitted dictionary, parent by parent.

:func:`hierarchy_report` encodes a set of token activations once and writes one HTML file
with everything inline (CSS, PNG plots as base64 data URIs, no scripts from anywhere), so
it can be mailed or archived as it is, and the two plots as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import io
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .metrics import code_levels, dense_fraction, feature_density, fvu, l0, level_names

_CURVE_POINTS = 12  # L values on the FVU-vs-L curve

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
  background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px}
.muted{color:#667085}.small{font-size:12px}
table.summary{border-collapse:collapse;background:#fff;margin:8px 0}
table.summary td,table.summary th{border:1px solid #dde1e7;padding:4px 12px;text-align:right}
table.summary th:first-child,table.summary td:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:16px;margin:12px 0}
.plots figure{margin:0;background:#fff;border:1px solid #dde1e7;padding:6px}
.plots figcaption{font-size:12px;color:#667085;max-width:560px}
.toc{columns:5 150px;font-size:12px;background:#fff;border:1px solid #dde1e7;padding:8px 12px}
.toc a{text-decoration:none;color:#1d4ed8}
section.latent{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:14px 0;
  padding:8px 14px}
section.latent h3{font-size:15px;margin:4px 0 6px}
details.child{border-left:3px solid #c7d2fe;margin:6px 0 6px 6px;padding:2px 10px}
details.child summary{cursor:pointer;font-weight:600;font-size:13px}
.ex{display:flex;gap:10px;align-items:baseline;margin:2px 0;font-size:13px}
.ex .v{min-width:56px;text-align:right;color:#667085;font-variant-numeric:tabular-nums}
.ctx{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
  word-break:break-all}
.ctx span{white-space:pre;box-shadow:inset -1px 0 #d0d5dd}.ctx mark{background:#fde68a;border-radius:3px;padding:0 1px;
  white-space:pre;font-weight:700}
.dead{font-size:12px;color:#98a2b3;margin:4px 0}
button{font:inherit;font-size:12px;margin-right:6px}
"""


_BUTTONS = (
    "<p><button onclick=\"document.querySelectorAll('details').forEach(d=>d.open=true)\">"
    "expand all</button><button onclick=\"document.querySelectorAll('details')"
    ".forEach(d=>d.open=false)\">collapse all</button></p>"
)


def _check_activations(activations):
    """X, tokens, document and position of every row, validated against each other."""
    missing = [a for a in ("X", "tokens", "doc_index", "position") if not hasattr(activations, a)]
    if missing:
        raise TypeError(
            f"activations needs attributes X, tokens, doc_index and position; "
            f"{type(activations).__name__} lacks {', '.join(missing)}."
        )
    X = activations.X
    if getattr(X, "ndim", None) != 2:
        raise ValueError(f"activations.X must be 2-d (n_tokens, n_features), got {np.shape(X)}.")
    tokens = np.asarray([str(t) for t in activations.tokens], dtype=object)
    doc = np.asarray(activations.doc_index).ravel()
    position = np.asarray(activations.position).ravel()
    for name, values in (("tokens", tokens), ("doc_index", doc), ("position", position)):
        if len(values) != X.shape[0]:
            raise ValueError(f"activations.{name} has {len(values)} entries for {X.shape[0]} rows of X.")
    return X, tokens, doc, position


def _tree(estimator, levels):
    """Parent index of every latent of levels 1.. (-1: none), or None without a tree."""
    n = len(levels)
    by_level = getattr(estimator, "parent_index_by_level_", None)
    if by_level is not None:
        maps = [np.asarray(m) for m in by_level]
        maps = maps[1:] if len(maps) == n else maps  # level 0 may be listed, without parents
        if len(maps) == n - 1 and all(len(m) == levels[i + 1].shape[1] for i, m in enumerate(maps)):
            return maps
    child_parent = getattr(estimator, "child_parent_", None)
    if n == 2 and child_parent is not None and len(child_parent) == levels[1].shape[1]:
        return [np.asarray(child_parent)]
    return None


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _density_plot(densities, names, n_rows, threshold):
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
    return _png(fig)


def _reconstructions(estimator, levels, names):
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


def _top_l_curve(decode, X, codes: sp.csr_matrix):
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


def _curve_plot(curves):
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
    return _png(fig)


class _Contexts:
    """Renders a row's token with ``context`` neighbours of the same document."""

    def __init__(self, tokens, doc, position, context):
        self.tokens, self.doc, self.context = tokens, doc, context
        self.order = np.lexsort((position, doc))  # rows in reading order
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(len(self.order))

    def html(self, row: int) -> str:
        r = self.rank[row]
        window = self.order[max(0, r - self.context) : r + self.context + 1]
        window = window[self.doc[window] == self.doc[row]]
        parts = []
        for i in window:
            text = html.escape(self.tokens[i]).replace("\n", "\u21b5")
            parts.append(f"<mark>{text}</mark>" if i == row else f"<span>{text}</span>")
        return "".join(parts)


def _examples(csc: sp.csc_matrix, column: int, n: int):
    """Rows and values of the n largest codes of a column, largest first."""
    start, end = csc.indptr[column], csc.indptr[column + 1]
    values, rows = csc.data[start:end], csc.indices[start:end]
    if len(values) > n:
        keep = np.argpartition(-values, n - 1)[:n]
        values, rows = values[keep], rows[keep]
    order = np.argsort(-values, kind="stable")
    return rows[order], values[order]


class _Page:
    """Latent sections: a latent's examples, then its children's, recursively."""

    def __init__(self, csc, densities, names, tree, contexts, n_examples):
        self.csc, self.densities, self.names = csc, densities, names
        self.contexts, self.n_examples = contexts, n_examples
        self.children = [None] * len(csc)  # children[i][p]: latents of level i + 1 under p
        for i, parent_of in enumerate(tree or []):
            by_density = np.argsort(-densities[i + 1], kind="stable")
            self.children[i] = {}
            for c in by_density:
                self.children[i].setdefault(int(parent_of[c]), []).append(int(c))

    def _examples_html(self, level, column):
        rows, values = _examples(self.csc[level], column, self.n_examples)
        return "".join(
            f'<div class="ex"><span class="v">{v:.3g}</span>'
            f'<span class="ctx">{self.contexts.html(r)}</span></div>'
            for r, v in zip(rows, values)
        )

    def _children_html(self, level, latent):
        if level + 1 >= len(self.csc) or self.children[level] is None:
            return ""
        kids = self.children[level].get(latent, [])
        density = self.densities[level + 1]
        alive = [c for c in kids if density[c] > 0]
        out = []
        for c in alive:
            out.append(
                f'<details class="child" open><summary>{self.names[level + 1]} {c} '
                f'<span class="muted small">density {density[c]:.4f}</span></summary>'
                f"{self._examples_html(level + 1, c)}{self._children_html(level + 1, c)}</details>"
            )
        dead = [c for c in kids if density[c] == 0]
        if dead:
            out.append(f'<div class="dead">dead {self.names[level + 1]}: '
                       f"{', '.join(map(str, dead))}</div>")
        return "".join(out)

    def section(self, latent):
        density = self.densities[0][latent]
        examples = self._examples_html(0, latent) or '<div class="dead">never fires</div>'
        return (
            f'<section class="latent" id="l0-{latent}"><h3>{self.names[0]} {latent} '
            f'<span class="muted small">density {density:.4f}</span></h3>'
            f"{examples}{self._children_html(0, latent)}</section>"
        )


def _summary_html(stats, names, levels, unassigned):
    tree = unassigned is not None  # the "without parent" column only for hierarchies
    rows = "".join(
        f"<tr><td>{n}</td><td>{lv.shape[1]}</td><td>{a:.2f}</td><td>{d:.1%}</td>"
        f"<td>{s:.1%}</td>" + (f"<td>{unassigned[i]}</td>" if tree else "") + "</tr>"
        for i, (n, lv, a, d, s) in enumerate(
            zip(names, levels, stats["l0"], stats["dead"], stats["dense"]))
    )
    return (
        '<table class="summary"><tr><th>level</th><th>latents</th><th>L0</th><th>dead</th>'
        f"<th>dense (&gt; {stats['threshold']:g})</th>"
        + ("<th>without parent</th>" if tree else "") + f"</tr>{rows}</table>"
    )


@validate_params(
    {
        "estimator": "no_validation",
        "activations": "no_validation",
        "path": [str, os.PathLike],
        "n_parents": [Interval(Integral, 1, None, closed="left")],
        "n_examples": [Interval(Integral, 1, None, closed="left")],
        "context": [Interval(Integral, 0, None, closed="left")],
        "sort": [StrOptions({"density", "index"})],
        "dense_threshold": [Interval(Real, 0, 1, closed="left")],
        "max_curve_rows": [Interval(Integral, 1, None, closed="left")],
        "title": [str, None],
    },
    prefer_skip_nested_validation=True,
)
def hierarchy_report(
    estimator,
    activations,
    path,
    *,
    n_parents=50,
    n_examples=5,
    context=4,
    sort="density",
    dense_threshold=0.1,
    max_curve_rows=8192,
    title=None,
):
    """Write a browsable, self-contained HTML report of a fitted dictionary.

    The page starts with a summary: the conventional FVU (:func:`~sklearn_hsae.metrics.fvu`),
    L0, dead and dense fractions per level, a histogram of feature densities and an FVU-vs-L
    curve: the FVU when every token keeps only its L largest codes (decoder directions are
    unit-norm, so ``|code|`` is the size of a latent's contribution), with the full point
    (mean L0, FVU) marked. Levels that add up (routed hierarchy) give one curve over all
    codes; a tree, whose every level reconstructs X alone, gives one FVU and one curve
    per level. Then come the ``n_parents``
    coarsest-level latents, each with its density and its ``n_examples`` top-activating
    tokens shown in context (``context`` tokens either side from the same document, the
    token itself highlighted), followed by its children (``child_parent_ == p``; deeper
    levels from ``parent_index_by_level_`` when the estimator has it) with theirs. A flat
    estimator gives one list of latents. Every token is HTML-escaped.

    Parameters
    ----------
    estimator : fitted estimator of sklearn_hsae
        Any estimator of the package.
    activations : object
        With ``X`` (n_tokens, n_features), ``tokens`` (one string per row), ``doc_index``
        and ``position`` (document and position of every row), e.g. the result of
        activation extraction.
    path : str or path-like
        Where to write the HTML. The plots also go beside it, as ``<stem>_density.png``
        and ``<stem>_fvu_l0.png``.
    n_parents : int, default=50
        Coarsest-level latents to show.
    n_examples : int, default=5
        Top-activating tokens per latent.
    context : int, default=4
        Tokens of context either side.
    sort : {"density", "index"}, default="density"
        Show the densest latents first, or the first ``n_parents`` by index.
    dense_threshold : float, default=0.1
        Density above which a latent counts as dense.
    max_curve_rows : int, default=8192
        Rows (an evenly spaced subset) used for the FVU-vs-L curve, which decodes once
        per point.
    title : str or None, default=None
        Page title; defaults to the estimator's class name.

    Returns
    -------
    path : pathlib.Path
        The HTML file written.

    Examples
    --------
    >>> import tempfile, types
    >>> import numpy as np
    >>> from sklearn_hsae import SparseAutoencoder
    >>> from sklearn_hsae.datasets import make_hierarchical_activations
    >>> from sklearn_hsae.report import hierarchy_report
    >>> X, *_ = make_hierarchical_activations(n_samples=300, random_state=0)
    >>> sae = SparseAutoencoder(n_components=16, k=3, max_iter=1, random_state=0).fit(X)
    >>> acts = types.SimpleNamespace(X=X, tokens=[f"t{i}" for i in range(300)],
    ...                              doc_index=np.arange(300) // 50, position=np.arange(300) % 50)
    >>> out = hierarchy_report(sae, acts, tempfile.mkdtemp() + "/sae.html", n_parents=4)
    >>> out.name, "data:image/png;base64," in out.read_text()
    ('sae.html', True)
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hierarchy_report draws its plots with matplotlib: pip install 'sklearn-hsae[report]'."
        ) from err
    X, tokens, doc, position = _check_activations(activations)
    path = Path(path)
    levels = code_levels(estimator, X)
    names = level_names(len(levels))
    labels = ["latent"] if len(levels) == 1 else names  # headings of the latent sections
    tree = _tree(estimator, levels)
    densities = feature_density(levels)
    recons = _reconstructions(estimator, levels, names)
    stats = {
        "l0": l0(levels),
        "dead": [float(np.mean(d == 0)) for d in densities],
        "dense": dense_fraction(levels, threshold=dense_threshold),
        "threshold": dense_threshold,
        "fvu": [(label, fvu(X, decode(codes))) for label, codes, decode in recons],
    }
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(max_curve_rows, X.shape[0])).astype(int))
    sample = np.asarray(X[rows])
    curves = [
        (label, *_top_l_curve(decode, sample, codes[rows]), (l0([codes])[0], value))
        for (label, codes, decode), (_, value) in zip(recons, stats["fvu"])
    ]
    pngs = {
        "density": _density_plot(densities, names, X.shape[0], dense_threshold),
        "fvu_l0": _curve_plot(curves),
    }
    for name, png in pngs.items():
        path.with_name(f"{path.stem}_{name}.png").write_bytes(png)

    page = _Page([lv.tocsc() for lv in levels], densities, labels, tree,
                 _Contexts(tokens, doc, position, context), n_examples)
    order = np.arange(levels[0].shape[1])
    if sort == "density":
        order = np.argsort(-densities[0], kind="stable")
    shown = [int(p) for p in order[:n_parents]]
    unassigned = None if tree is None else ["-"] + [int(np.sum(m < 0)) for m in tree]
    heading = html.escape(title if title is not None else f"{type(estimator).__name__} report")
    images = "".join(
        f'<figure><img alt="{alt}" src="data:image/png;base64,{base64.b64encode(pngs[key]).decode()}">'
        f"<figcaption>{caption}</figcaption></figure>"
        for key, alt, caption in (
            ("density", "feature density histogram",
             "Feature density per level; dead latents are counted in the legend, the dotted "
             "line is the dense threshold."),
            ("fvu_l0", "FVU against L",
             f"FVU when each token keeps only its L largest codes, L = 1, 2, ..., against "
             f"the mean number kept ({len(rows)} tokens); the star is the estimator with all "
             "its codes."),
        )
    )
    toc = "".join(
        f'<a href="#l0-{p}">{labels[0]} {p}</a> <span class="muted">{densities[0][p]:.3f}</span><br>'
        for p in shown
    )
    note = "" if tree or len(levels) == 1 else (
        "<p class=muted>This estimator exposes no parent map; only the first level is listed.</p>")
    fvu_text = " &middot; ".join(
        f"{label + ' ' if len(stats['fvu']) > 1 else ''}<b>{value:.4f}</b>" for label, value in stats["fvu"]
    )
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>{_CSS}</style></head><body><main>
<h1>{heading}</h1>
<p class="muted">{html.escape(repr(estimator))}<br>{X.shape[0]} tokens in
{len(np.unique(doc))} documents &middot; FVU {fvu_text} &middot; L0
{" + ".join(f"{a:.2f}" for a in stats["l0"])}</p>
{_summary_html(stats, names, levels, unassigned)}
<div class="plots">{images}</div>
<h2>{len(shown)} of {levels[0].shape[1]} {"" if len(levels) == 1 else names[0] + " "}latents,
by {sort}</h2>{note}
{_BUTTONS if tree else ""}
<div class="toc">{toc}</div>
{"".join(page.section(p) for p in shown)}
</main></body></html>
"""
    path.write_text(document, encoding="utf-8")
    return path
