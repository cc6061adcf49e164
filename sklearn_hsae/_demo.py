"""``make demo``: fit an H-SAE and print what it found."""

from __future__ import annotations

import time

import numpy as np


def run_demo(args) -> int:
    if args.synthetic:
        return synthetic_demo(args)
    return language_model_demo(args)


def synthetic_demo(args) -> int:
    """A known tree: how much of it does the routed H-SAE recover?"""
    from . import HierarchicalSparseAutoencoder, SparseAutoencoder
    from .datasets import make_hierarchical_activations
    from .metrics import evaluate, tree_recovery

    X, parents, children, tree = make_hierarchical_activations(
        n_samples=20_000, random_state=args.random_state)
    print("Synthetic activations: 24 parents x 4 children in 3-d subspaces, 64 features, "
          "3 active parents a row, 20000 rows (18000 to fit, 2000 held out).")
    X_train, X_test = X[:18_000], X[18_000:]
    hsae = HierarchicalSparseAutoencoder(
        n_parents=24, n_children=8, subspace_dim=4, k=3, beta=2.0, max_iter=args.max_iter or 80,
        batch_size=512, random_state=args.random_state, verbose=args.verbose)
    start = time.perf_counter()
    hsae.fit(X_train)
    print(f"H-SAE fit: {hsae.n_steps_} steps in {time.perf_counter() - start:.1f} s")
    report = evaluate(hsae, X_test)
    print(f"held-out FVU {report['fvu']:.4f}; L0 parents {report['l0'][0]:.2f}, children "
          f"{report['l0'][1]:.2f}")
    r = tree_recovery(parents, children, tree, hsae.parent_components_, hsae.child_components_,
                      hsae.child_parent_)
    print(f"recovered (|cos| >= 0.8): parents {r['parent_recovered']:.0%}, children "
          f"{r['child_recovered']:.0%}; {r['children_under_true_parent']:.0%} of recovered "
          "children sit under their true parent's match")
    match = np.abs(parents @ hsae.parent_components_.T).argmax(axis=1)
    for p in range(3):
        j = match[p]
        mine = hsae.child_components_[hsae.child_parent_ == j]
        cos = np.abs(children[tree == p] @ mine.T).max(axis=1)
        print(f"  true parent {p} -> parent {j} (cos {abs(parents[p] @ hsae.parent_components_[j]):.2f}),"
              " its true children's best cos: " + " ".join(f"{c:.2f}" for c in cos))
    sae = SparseAutoencoder(n_components=24 * 9, k=6, max_iter=args.max_iter or 80, batch_size=512,
                            random_state=args.random_state).fit(X_train)
    flat = np.mean(np.abs(parents @ sae.components_.T).max(axis=1) >= 0.8)
    print(f"a flat TopK SAE of the same width (216, k=6) recovers {flat:.0%} of the parents: it "
          "learns parent + child sums instead (feature absorption)")
    return 0


def language_model_demo(args) -> int:
    raise SystemExit("The SmolLM2 demo needs sklearn_hsae.datasets.fetch_text_activations; "
                     "run `python -m sklearn_hsae demo --synthetic`.")
