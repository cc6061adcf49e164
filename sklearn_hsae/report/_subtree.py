"""The tree of a fitted dictionary: parent maps and child lists."""

from __future__ import annotations

import numpy as np


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
