"""hierarchy_report: encode once, then write the page section by section."""

from __future__ import annotations

import html
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from tqdm.auto import tqdm

from ..metrics import code_levels, feature_density, level_names
from ._latents import Contexts, LatentSections
from ._subtree import parent_index
from ._summary import plots_html, summarize, summary_html

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
figure.subtree{margin:4px 0 8px;max-height:340px;overflow:auto;border:1px solid #eef0f3}
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


def _header_html(estimator, X, doc, summary, heading) -> str:
    fvu_text = " &middot; ".join(
        f"{label + ' ' if len(summary.fvu) > 1 else ''}<b>{value:.4f}</b>"
        for label, value in summary.fvu
    )
    return (
        f'<h1>{heading}</h1>\n<p class="muted">{html.escape(repr(estimator))}<br>{X.shape[0]} '
        f"tokens in\n{len(np.unique(doc))} documents &middot; FVU {fvu_text} &middot; L0\n"
        + " + ".join(f"{a:.2f}" for a in summary.l0) + "</p>"
    )


def _index_html(levels, densities, labels, shown, sort, tree) -> str:
    """The heading of the latents part, its buttons and the table of contents."""
    names = level_names(len(levels))
    toc = "".join(
        f'<a href="#l0-{p}">{labels[0]} {p}</a> <span class="muted">{densities[0][p]:.3f}</span><br>'
        for p in shown
    )
    note = "" if tree is not None or len(levels) == 1 else (
        "<p class=muted>This estimator exposes no parent map; only the first level is listed.</p>")
    kind = "" if len(levels) == 1 else names[0] + " "
    return (
        f"<h2>{len(shown)} of {levels[0].shape[1]} {kind}latents,\nby {sort}</h2>{note}\n"
        f"{_BUTTONS if tree is not None else ''}\n<div class=\"toc\">{toc}</div>"
    )


def _shown_parents(density, sort, n_shown_parents) -> list[int]:
    order = np.argsort(-density, kind="stable") if sort == "density" else np.arange(len(density))
    return [int(p) for p in order[:n_shown_parents]]


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hierarchy_report draws its plots with matplotlib: pip install 'sklearn-hsae[report]'."
        ) from err


@validate_params(
    {
        "estimator": "no_validation",
        "activations": "no_validation",
        "path": [str, os.PathLike],
        "n_shown_parents": [Interval(Integral, 1, None, closed="left")],
        "n_examples": [Interval(Integral, 1, None, closed="left")],
        "context": [Interval(Integral, 0, None, closed="left")],
        "sort": [StrOptions({"density", "index"})],
        "dense_threshold": [Interval(Real, 0, 1, closed="left")],
        "max_curve_rows": [Interval(Integral, 1, None, closed="left")],
        "title": [str, None],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def hierarchy_report(
    estimator,
    activations,
    path,
    *,
    n_shown_parents=50,
    n_examples=5,
    context=4,
    sort="density",
    dense_threshold=0.1,
    max_curve_rows=8192,
    title=None,
    verbose=0,
):
    """Write a browsable, self-contained HTML report of a fitted dictionary.

    The page starts with a summary: the conventional FVU (:func:`~sklearn_hsae.metrics.fvu`),
    L0, dead and dense fractions per level, a histogram of feature densities and an FVU-vs-L
    curve: the FVU when every token keeps only its L largest codes (decoder directions are
    unit-norm, so ``|code|`` is the size of a latent's contribution), with the full point
    (mean L0, FVU) marked. Levels that add up (routed hierarchy) give one curve over all
    codes; a tree, whose every level reconstructs X alone, gives one FVU and one curve
    per level.

    Then come ``n_shown_parents`` coarsest-level latents, each with its density, a
    picture of its subtree (every descendant, labelled with its top tokens; dead ones
    grey) and its ``n_examples`` top-activating tokens shown in context (``context``
    tokens either side from the same document, the token itself highlighted). Its
    children follow (from ``parent_index_by_level_``, or ``child_parent_ == p``), each
    with its tokens and its own children, down to the finest level; a child that never
    fires is listed by index unless one of its descendants fires. A flat estimator gives
    one list of latents and no tree. Every token is HTML-escaped.

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
    n_shown_parents : int, default=50
        How many coarsest-level latents the page lists (not to be confused with the
        estimators' ``n_parents``, the width of that level).
    n_examples : int, default=5
        Top-activating tokens per latent.
    context : int, default=4
        Tokens of context either side.
    sort : {"density", "index"}, default="density"
        List the densest latents first, or the first ``n_shown_parents`` by index.
    dense_threshold : float, default=0.1
        Density above which a latent counts as dense.
    max_curve_rows : int, default=8192
        Rows (an evenly spaced subset) used for the FVU-vs-L curve, which decodes once
        per point.
    title : str or None, default=None
        Page title; defaults to the estimator's class name.
    verbose : int, default=0
        0 writes silently; 1 or more shows a progress bar (rate and time left) on
        stderr: encoding, summary, then one step per listed latent.

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
    >>> out = hierarchy_report(sae, acts, tempfile.mkdtemp() + "/sae.html", n_shown_parents=4)
    >>> out.name, "data:image/png;base64," in out.read_text()
    ('sae.html', True)
    """
    _require_matplotlib()
    X, tokens, doc, position = _check_activations(activations)
    path = Path(path)
    with tqdm(total=2, desc="report", unit="step", disable=not verbose, leave=False) as bar:
        bar.set_postfix_str("encoding")
        levels = code_levels(estimator, X)
        densities = feature_density(levels)
        shown = _shown_parents(densities[0], sort, n_shown_parents)
        bar.total += len(shown)
        bar.update()
        bar.set_postfix_str("summary and plots")
        summary = summarize(estimator, X, levels, densities, dense_threshold, max_curve_rows)
        for name, image in summary.pngs.items():
            path.with_name(f"{path.stem}_{name}.png").write_bytes(image)
        bar.update()
        bar.set_postfix_str("latents")
        tree = parent_index(estimator, levels)
        labels = ["latent"] if len(levels) == 1 else level_names(len(levels))
        latents = LatentSections([lv.tocsc() for lv in levels], densities, labels, tree,
                                 Contexts(tokens, doc, position, context), n_examples)
        sections = []
        for p in shown:
            sections.append(latents.section(p))
            bar.update()
    unassigned = None if tree is None else ["-"] + [int(np.sum(m < 0)) for m in tree[1:]]
    heading = html.escape(title if title is not None else f"{type(estimator).__name__} report")
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>{_CSS}</style></head><body><main>
{_header_html(estimator, X, doc, summary, heading)}
{summary_html(summary, levels, unassigned)}
<div class="plots">{plots_html(summary)}</div>
{_index_html(levels, densities, labels, shown, sort, tree)}
{"".join(sections)}
</main></body></html>
"""
    path.write_text(document, encoding="utf-8")
    return path
