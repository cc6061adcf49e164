"""The latents part of the report: a latent's tokens in context, its subtree, its children."""

from __future__ import annotations

import html

import numpy as np
import scipy.sparse as sp

from ._plots import data_uri, subtree_plot
from ._subtree import child_lists, node_label, subtree_layout

_LABEL_ROWS = 20  # top rows searched for the distinct tokens of a subtree node's label


class Contexts:
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


def top_examples(csc: sp.csc_matrix, column: int, n: int):
    """Rows and values of the n largest codes of a column, largest first."""
    start, end = csc.indptr[column], csc.indptr[column + 1]
    values, rows = csc.data[start:end], csc.indices[start:end]
    if len(values) > n:
        keep = np.argpartition(-values, n - 1)[:n]
        values, rows = values[keep], rows[keep]
    order = np.argsort(-values, kind="stable")
    return rows[order], values[order]


def _fires_below(tree, densities) -> list:
    """Per level, whether a latent or any of its descendants fires."""
    fires = [d > 0 for d in densities]
    for level in range(len(densities) - 1, 0, -1):
        parent = tree[level]
        linked = parent >= 0
        np.logical_or.at(fires[level - 1], parent[linked], fires[level][linked])
    return fires


class LatentSections:
    """One section per coarsest-level latent: its examples and subtree, then its children.

    Children (densest first) nest recursively to the finest level. A child that never
    fires still gets a section when a descendant fires (in a tree each level is its own
    SAE, so that happens); other dead children are listed by index.
    """

    def __init__(self, csc, densities, names, tree, contexts, n_examples):
        self.csc, self.densities, self.names = csc, densities, names
        self.contexts, self.n_examples = contexts, n_examples
        self.children = child_lists(tree, densities) if tree is not None else None
        self.fires = _fires_below(tree, densities) if tree is not None else None

    def _examples_html(self, level, column):
        rows, values = top_examples(self.csc[level], column, self.n_examples)
        return "".join(
            f'<div class="ex"><span class="v">{v:.3g}</span>'
            f'<span class="ctx">{self.contexts.html(r)}</span></div>'
            for r, v in zip(rows, values)
        )

    def _children_html(self, level, latent):
        if self.children is None or level + 1 >= len(self.csc):
            return ""
        kids = self.children[level + 1].get(latent, [])
        density, name = self.densities[level + 1], self.names[level + 1]
        out = []
        for c in kids:
            if self.fires[level + 1][c]:
                state = f"density {density[c]:.4f}" if density[c] > 0 else "never fires"
                out.append(
                    f'<details class="child" open><summary>{name} {c} '
                    f'<span class="muted small">{state}</span></summary>'
                    f"{self._examples_html(level + 1, c)}{self._children_html(level + 1, c)}"
                    "</details>"
                )
        dead = [c for c in kids if not self.fires[level + 1][c]]
        if dead:
            out.append(f'<div class="dead">dead {name}: {", ".join(map(str, dead))}</div>')
        return "".join(out)

    def _top_tokens(self, level, column) -> list[str]:
        rows, _ = top_examples(self.csc[level], column, _LABEL_ROWS)
        return list(dict.fromkeys(self.contexts.tokens[rows]))  # distinct, strongest first

    def subtree(self, latent):
        """(layout, PNG) of the subtree under a coarsest-level latent."""
        layout = subtree_layout(self.children, latent)
        labels = {(lv, c): node_label(f"{self.names[lv]} {c}", self._top_tokens(lv, c))
                  for lv, c in layout.nodes}
        dead = {(lv, c) for lv, c in layout.nodes if self.densities[lv][c] == 0}
        return layout, subtree_plot(layout, labels, dead)

    def _subtree_html(self, latent):
        if self.children is None:
            return ""
        layout, image = self.subtree(latent)
        alt = (f"subtree of {self.names[0]} {latent}: {len(layout.nodes)} latents, "
               f"{len(layout.edges)} edges")
        return f'<figure class="subtree"><img alt="{alt}" src="{data_uri(image)}"></figure>'

    def section(self, latent):
        density = self.densities[0][latent]
        examples = self._examples_html(0, latent) or '<div class="dead">never fires</div>'
        return (
            f'<section class="latent" id="l0-{latent}"><h3>{self.names[0]} {latent} '
            f'<span class="muted small">density {density:.4f}</span></h3>'
            f"{self._subtree_html(latent)}{examples}{self._children_html(0, latent)}</section>"
        )
