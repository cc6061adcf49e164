"""Command line: ``python -m sklearn_hsae demo``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args) -> int:
    from . import HierarchicalSparseAutoencoder
    from .datasets import make_hierarchical_activations
    from .metrics import tree_recovery

    print("Synthetic activations: 24 parents x 4 children in 3-d subspaces, 64 features, "
          f"3 active parents per row, {args.n_samples} rows.")
    X, parents, children, tree = make_hierarchical_activations(
        n_samples=args.n_samples, random_state=args.random_state
    )
    X_train, X_test = X[: int(0.9 * len(X))], X[int(0.9 * len(X)) :]
    hsae = HierarchicalSparseAutoencoder(
        n_parents=24, n_children=8, subspace_dim=4, k=3, beta=2.0,
        max_iter=args.max_iter, batch_size=512, random_state=args.random_state,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    hsae.fit(X_train)
    seconds = time.perf_counter() - start
    codes = hsae.encode(X_test)
    result = tree_recovery(parents, children, tree, hsae.parent_components_,
                           hsae.child_components_, hsae.child_parent_)
    print(f"fit: {hsae.n_steps_} steps in {seconds:.1f} s on {hsae._device()}")
    print(f"held-out FVU              {1 - hsae.score(X_test):.4f}")
    print(f"L0 parents / children     {codes.parent.getnnz(axis=1).mean():.2f} / "
          f"{codes.child.getnnz(axis=1).mean():.2f}")
    print(f"parents recovered (|cos| >= 0.8)   {result['parent_recovered']:.0%}")
    print(f"children recovered (|cos| >= 0.8)  {result['child_recovered']:.0%}")
    print(f"recovered children under their true parent's match  "
          f"{result['children_under_true_parent']:.0%}")
    match = np.abs(parents @ hsae.parent_components_.T).argmax(axis=1)
    print("a few true parents -> learned parent (cos) -> its children's best matches:")
    for p in range(3):
        j = match[p]
        mine = hsae.child_components_[hsae.child_parent_ == j]
        truth = children[tree == p]
        cos = np.abs(truth @ mine.T).max(axis=1)
        print(f"  true parent {p:2d} -> parent {j:2d} "
              f"(cos {abs(parents[p] @ hsae.parent_components_[j]):.2f}) -> children cos "
              + " ".join(f"{c:.2f}" for c in cos))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sklearn_hsae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit an H-SAE on built-in data and print what it found")
    demo.add_argument("--n-samples", type=int, default=20_000)
    demo.add_argument("--max-iter", type=int, default=80)
    demo.add_argument("--random-state", type=int, default=0)
    demo.add_argument("--verbose", type=int, default=0)
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
