"""``make demo``: fit an H-SAE, print what it found, and say how long every stage took.

Progress bars (``args.verbose >= 1``, the command line's default) go to stderr; stage
names, wall times and results to stdout.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager

import numpy as np


def call_with_verbose(func, *args, verbose, **kwargs):
    """``func(*args, **kwargs)``, with ``verbose`` only when func's signature takes it.

    The data and language-model helpers gain ``verbose`` in a change of their own; this
    works with either version, and passes nothing a function would reject.

    Examples
    --------
    >>> from sklearn_hsae._demo import call_with_verbose
    >>> call_with_verbose(lambda x, verbose=0: (x, verbose), 1, verbose=2)
    (1, 2)
    >>> call_with_verbose(lambda x: x, 1, verbose=2)
    1
    """
    if "verbose" in inspect.signature(func).parameters:
        kwargs["verbose"] = verbose
    return func(*args, **kwargs)


@contextmanager
def stage(name: str):
    """Print a stage's name before it starts and its wall time once it ends."""
    print(f"== {name} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"   {name}: {time.perf_counter() - start:.1f} s", flush=True)


def run_demo(args) -> int:
    if args.synthetic:
        return synthetic_demo(args)
    return language_model_demo(args)


def synthetic_demo(args) -> int:
    """A known tree: how much of it does the routed H-SAE recover?"""
    from . import HierarchicalSparseAutoencoder, SparseAutoencoder
    from .datasets import make_hierarchical_activations
    from .metrics import evaluate

    with stage("data"):
        X, parents, children, tree = make_hierarchical_activations(
            n_samples=20_000, random_state=args.random_state)
        print("Synthetic activations: 24 parents x 4 children in 3-d subspaces, 64 features, "
              "3 active parents a row, 20000 rows (18000 to fit, 2000 held out).")
    X_train, X_test = X[:18_000], X[18_000:]
    hsae = HierarchicalSparseAutoencoder(
        n_parents=24, n_children=8, subspace_dim=4, k=3, beta=2.0, max_iter=args.max_iter or 80,
        batch_size=512, random_state=args.random_state, verbose=args.verbose)
    with stage("fit"):
        hsae.fit(X_train)
        print(f"H-SAE fit: {hsae.n_steps_} steps")
    with stage("evaluation"):
        report = evaluate(hsae, X_test)
        print(f"held-out FVU {report['fvu']:.4f}; L0 parents {report['l0'][0]:.2f}, children "
              f"{report['l0'][1]:.2f}")
        _print_recovery(hsae, parents, children, tree)
    with stage("flat SAE of the same width"):
        sae = SparseAutoencoder(n_components=24 * 9, k=6, max_iter=args.max_iter or 80,
                                batch_size=512, random_state=args.random_state,
                                verbose=args.verbose).fit(X_train)
        flat = np.mean(np.abs(parents @ sae.components_.T).max(axis=1) >= 0.8)
        sums = (parents[tree] + children) / np.sqrt(2)
        absorbed = np.mean(np.abs(sums @ sae.components_.T).max(axis=1) >= 0.8)
        print(f"a flat TopK SAE of the same width (216, k=6) recovers {flat:.0%} of the parents "
              f"and learns {absorbed:.0%} of the parent + child sums (absorption), with no tree "
              "to say which child belongs to which parent")
    return 0


def _print_recovery(hsae, parents, children, tree) -> None:
    """How much of the true tree the H-SAE found, and three true parents up close."""
    from .metrics import tree_recovery

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
        parent_cos = abs(parents[p] @ hsae.parent_components_[j])
        print(f"  true parent {p} -> parent {j} (cos {parent_cos:.2f}), its true children's "
              "best cos: " + " ".join(f"{c:.2f}" for c in cos))


def _top_tokens(csc, column: int, tokens, n: int = 6) -> str:
    """The distinct tokens with the largest codes in a column, largest first."""
    start, end = csc.indptr[column], csc.indptr[column + 1]
    rows = csc.indices[start:end][np.argsort(-csc.data[start:end], kind="stable")]
    seen: list[str] = []
    for row in rows:
        token = repr(str(tokens[row]))
        if token not in seen:
            seen.append(token)
        if len(seen) == n:
            break
    return " ".join(seen)


def language_model_demo(args) -> int:
    """The default H-SAE on SmolLM2-135M layer-15 activations of a small English corpus."""
    try:
        from .datasets import fetch_text_activations
        from .metrics import ce_loss_recovered
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise SystemExit(f"The language-model demo needs the [llm] extra ({exc}); "
                         "run `python -m sklearn_hsae demo --synthetic` without it.") from None
    from . import HierarchicalSparseAutoencoder
    from .metrics import evaluate

    with stage("activations (SmolLM2-135M layer 15 on the gensim test corpus: news, Usenet, "
               "reviews; extracted once, about 2-10 min on 2 cores, then read from the cache)"):
        data = call_with_verbose(fetch_text_activations, args.data_home, layer=15,
                                 n_texts=args.n_texts, verbose=args.verbose)
        print(f"{len(data.X)} tokens from {len(data.texts)} texts")
    rng = np.random.RandomState(args.random_state)
    n_held = min(300, len(data.texts) // 4)
    held = np.sort(rng.choice(len(data.texts), n_held, replace=False))  # whole texts held out
    test = np.isin(data.doc_index, held)
    X_train, X_test = data.X[~test], data.X[test]
    hsae = HierarchicalSparseAutoencoder(
        n_parents=1024, n_children=16, subspace_dim=4, k=32, max_iter=args.max_iter or 5,
        batch_size=1024, random_state=args.random_state, verbose=args.verbose)
    with stage("fit"):
        hsae.fit(X_train)
        print(f"H-SAE 1024 parents x 16 children (s=4, k=32): {hsae.n_steps_} steps on "
              f"{len(X_train)} tokens")
    with stage("evaluation"):
        report = evaluate(hsae, X_test)
        print(f"held out {len(held)} texts ({len(X_test)} tokens): FVU {report['fvu']:.4f} "
              f"(explained variance {1 - report['fvu']:.4f}); L0 parents {report['l0'][0]:.1f}, "
              f"children {report['l0'][1]:.1f}; dead parents {report['dead_fraction'][0]:.1%}, "
              f"dead children {report['dead_fraction'][1]:.1%}")
    with stage("CE loss recovered"):
        ce = call_with_verbose(ce_loss_recovered, hsae, [data.texts[i] for i in held], layer=15,
                               verbose=args.verbose)
        print(f"CE loss recovered {ce['ce_loss_recovered']:.4f} (clean {ce['ce_clean']:.3f}, "
              f"spliced {ce['ce_spliced']:.3f}, zero-ablated {ce['ce_zero_ablation']:.3f} "
              f"nats/token; {ce['n_predictions']} predictions)")
    with stage("examples"):
        _print_examples(hsae, X_test, data.tokens[test], rng)
    print("\nBrowse every parent and child: python -m sklearn_hsae report (see README).")
    return 0


def _print_examples(hsae, X_test, tokens, rng) -> None:
    """Four parents that fire now and then, each with its three most frequent children."""
    codes = hsae.encode(X_test)
    parents, children = codes.parent.tocsc(), codes.child.tocsc()
    density = np.diff(parents.indptr) / len(X_test)
    child_count = np.diff(children.indptr).reshape(hsae.n_parents, hsae.n_children)
    live = (child_count >= 5).sum(axis=1)
    # Drawn at random among the parents active on 0.2-5 % of held-out tokens that use at
    # least half of their children.
    used = live >= hsae.n_children // 2
    candidates = np.flatnonzero((density > 0.002) & (density < 0.05) & used)
    shown = np.sort(rng.choice(candidates, min(4, len(candidates)), replace=False))
    print("A few parents -> their most frequent children (top-activating held-out tokens):")
    for j in shown:
        print(f"parent {j} ({density[j]:.2%} of tokens): {_top_tokens(parents, j, tokens)}")
        for c in np.argsort(-child_count[j], kind="stable")[:3]:
            column = j * hsae.n_children + c
            share = child_count[j, c] / max(child_count[j].sum(), 1)
            print(f"   child {column} ({share:.0%} of its parent's tokens): "
                  f"{_top_tokens(children, column, tokens)}")
