"""The tree of a fitted dictionary: parent maps, child lists, and one parent's subtree drawn.

The layout is a pure function of the parent maps (:func:`subtree_layout`), so what the
report draws can be checked against ``parent_index_by_level_`` without reading pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LABEL_CHARS = 30  # characters per line of a node label; the drawing's columns fit them


def parent_index(estimator, levels):
    """``parent_index_by_level_`` of the estimator, checked against its codes, or None.

    Returns one array per level, level 0 all -1 (none), so that ``maps[l][c]`` is the
    parent in level ``l - 1`` of latent c of level l. Estimators with two levels and only
    ``child_parent_`` get it from there; flat ones, and maps that do not fit the codes'
    widths, give None (no tree).
    """
    n = len(levels)
    widths = [lv.shape[1] for lv in levels]
    maps = getattr(estimator, "parent_index_by_level_", None)
    if maps is not None:
        maps = [np.asarray(m) for m in maps]
        if len(maps) == n - 1:  # level 0 left out: it has no parents
            maps = [np.full(widths[0], -1), *maps]
    elif n == 2 and getattr(estimator, "child_parent_", None) is not None:
        maps = [np.full(widths[0], -1), np.asarray(estimator.child_parent_)]
    if n < 2 or maps is None or [len(m) for m in maps] != widths:
        return None
    return maps


def child_lists(parent_index_by_level, priority=None) -> list[dict]:
    """``children[l][p]``: the latents of level l whose parent is latent p of level l - 1.

    Children come by decreasing ``priority[l]`` (e.g. feature density; ties by index),
    or by index without it. ``children[0]`` is empty: level 0 has no parents.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.report._subtree import child_lists
    >>> child_lists([np.full(2, -1), np.array([1, 0, 1, -1])])
    [{}, {1: [0, 2], 0: [1]}]
    """
    children = [{}]
    for level in range(1, len(parent_index_by_level)):
        parent = np.asarray(parent_index_by_level[level])
        order = (np.arange(len(parent)) if priority is None
                 else np.argsort(-np.asarray(priority[level]), kind="stable"))
        by_parent: dict = {}
        for c in order[parent[order] >= 0]:
            by_parent.setdefault(int(parent[c]), []).append(int(c))
        children.append(by_parent)
    return children


class SubtreeLayout(NamedTuple):
    """Where every node of a subtree goes when drawn left to right."""

    nodes: list
    """``(level, latent)`` of every node, depth first from the root."""
    edges: list
    """``((level, parent), (level + 1, child))`` for every parent -> child link."""
    xy: np.ndarray
    """(n_nodes, 2): column (levels below the root) and row of every node. Leaves take
    rows 0, 1, ... in depth-first order; a parent sits midway between its first and
    last child."""


def subtree_layout(children, root, level=0) -> SubtreeLayout:
    """The subtree under latent ``root`` of ``level``, laid out as a tidy tree.

    Parameters
    ----------
    children : list of dict
        ``children[l][p]``, as :func:`child_lists` returns; the drawing keeps its order.
    root : int
        The latent at the root.
    level : int, default=0
        Level of the root.

    Returns
    -------
    layout : SubtreeLayout
        Nodes, edges and positions.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hsae.report._subtree import child_lists, subtree_layout
    >>> children = child_lists([np.full(2, -1), np.array([1, 0, 1]), np.array([2, 2, 0])])
    >>> layout = subtree_layout(children, 1)
    >>> layout.nodes
    [(0, 1), (1, 0), (2, 2), (1, 2), (2, 0), (2, 1)]
    >>> layout.xy[:, 1].tolist()  # leaves in rows 0, 1, 2; parents midway
    [0.75, 0.0, 0.0, 1.5, 1.0, 2.0]
    """
    nodes, edges, xy = [], [], []
    next_leaf = [0]

    def place(lv: int, latent: int) -> float:
        at = len(nodes)
        nodes.append((lv, latent))
        xy.append((lv - level, 0.0))
        kids = children[lv + 1].get(latent, []) if lv + 1 < len(children) else []
        rows = []
        for c in kids:
            edges.append(((lv, latent), (lv + 1, c)))
            rows.append(place(lv + 1, c))
        if rows:
            row = (rows[0] + rows[-1]) / 2
        else:
            row, next_leaf[0] = float(next_leaf[0]), next_leaf[0] + 1
        xy[at] = (lv - level, row)
        return row

    place(level, int(root))
    return SubtreeLayout(nodes, edges, np.array(xy, dtype=float).reshape(-1, 2))


def node_label(name: str, tokens: list[str]) -> str:
    """A node's text: its name, then as many of its top tokens as fit on one line."""
    line = ""
    for token in tokens:
        word = repr(token)  # quotes show spaces; newlines and controls come escaped
        if len(line) + len(word) + 1 > LABEL_CHARS:
            if not line:  # one long token: show its start
                line = word[: LABEL_CHARS - 1] + "\u2026"
            break
        line = f"{line} {word}" if line else word
    return f"{name}\n{line or 'never fires'}"
