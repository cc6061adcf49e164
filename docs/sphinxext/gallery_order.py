"""Order of the gallery: the quick start first, then from synthetic to real data."""

from pathlib import Path

ORDER = (
    "plot_quickstart.py",
    "plot_tree_posthoc.py",
    "plot_sparse_probing.py",
    "plot_hierarchy_report.py",
)


def example_order(filename):
    """Sort key for sphinx-gallery's ``within_subsection_order``; unknown files go last."""
    name = Path(filename).name
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)
