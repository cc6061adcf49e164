"""Command line: ``python -m sklearn_hsae {demo, extract, fit, report} ...``.

A typical session, from raw text to a browsable page::

    python -m sklearn_hsae extract --texts corpus.txt --out acts/      # SmolLM2 layer 15
    python -m sklearn_hsae fit acts/ --out model/ --n-parents 1024 --k 32
    python -m sklearn_hsae report model/ --activations acts/ --out report.html

Activations live in a directory of ``.npy`` files (``X.npy``, and for reports
``tokens.npy``, ``doc_index.npy``, ``position.npy``), read without pickle; ``fit``
memory-maps ``X.npy``, so it may be larger than memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

_ACTIVATION_FILES = ("X", "tokens", "doc_index", "position")


def _read_lines(path) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise SystemExit(f"{path} holds no text (one text per line).")
    return texts


def _save_activations(acts, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "X.npy", acts.X)
    np.save(out / "tokens.npy", np.asarray(acts.tokens, dtype=str))  # fixed-width: no pickle
    np.save(out / "doc_index.npy", acts.doc_index)
    np.save(out / "position.npy", acts.position)


class _Activations:
    """Activations read back from a directory written by ``extract``."""

    def __init__(self, directory: Path):
        for name in _ACTIVATION_FILES:
            path = directory / f"{name}.npy"
            if not path.exists():
                raise SystemExit(f"{directory} lacks {name}.npy (write it with `extract`).")
            value = np.load(path, mmap_mode="r" if name == "X" else None, allow_pickle=False)
            setattr(self, name, value.astype(object) if name == "tokens" else value)


def _load_X(path: Path):
    """X from a ``.npy`` file or an activations directory, memory-mapped."""
    if path.is_dir():
        path = path / "X.npy"
    if path.suffix != ".npy" or not path.exists():
        raise SystemExit(f"{path}: expected a .npy file or a directory holding X.npy.")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _extract(args) -> int:
    from .datasets import extract_activations

    texts = _read_lines(args.texts)
    start = time.perf_counter()
    acts = extract_activations(texts, model=args.model, layer=args.layer, batch_size=args.batch_size)
    _save_activations(acts, Path(args.out))
    print(f"{len(texts)} texts -> {acts.X.shape[0]} tokens x {acts.X.shape[1]} features "
          f"({acts.n_dropped} massive-norm rows dropped) in {time.perf_counter() - start:.1f} s; "
          f"written to {args.out}")
    return 0


def _fit(args) -> int:
    from . import HierarchicalSparseAutoencoder
    from .io import save
    from .metrics import evaluate

    X = _load_X(Path(args.activations))
    lr = args.learning_rate if args.learning_rate == "auto" else float(args.learning_rate)
    est = HierarchicalSparseAutoencoder(
        n_parents=args.n_parents, n_children=args.n_children, subspace_dim=args.subspace_dim,
        k=args.k, architecture=args.architecture, n_levels=args.n_levels,
        max_iter=args.max_iter, batch_size=args.batch_size, learning_rate=lr,
        random_state=args.random_state, verbose=args.verbose, checkpoint_dir=args.checkpoint_dir,
    )
    start = time.perf_counter()
    est.fit(X)
    save(est, args.out)
    sample = np.asarray(X[: min(len(X), 20_000)])
    report = evaluate(est, sample)
    print(f"fit {X.shape[0]} x {X.shape[1]} in {time.perf_counter() - start:.1f} s "
          f"({est.n_steps_} steps); model saved to {args.out}")
    print(f"on the first {len(sample)} rows: FVU {report['fvu']:.4f}, L0 per level "
          + ", ".join(f"{v:.2f}" for v in report["l0"]))
    return 0


def _report(args) -> int:
    from .io import load
    from .report import hierarchy_report

    if args.activations:
        acts = _Activations(Path(args.activations))
    else:
        from .datasets import extract_activations

        acts = extract_activations(_read_lines(args.texts), model=args.model, layer=args.layer)
    est = load(args.model_dir)
    path = hierarchy_report(est, acts, args.out, n_parents=args.n_parents)
    print(f"report written to {path}")
    return 0


def _demo(args) -> int:
    from ._demo import run_demo

    return run_demo(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sklearn_hsae",
                                     description="Hierarchical sparse autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit an H-SAE on built-in data and print what it found")
    demo.add_argument("--synthetic", action="store_true",
                      help="synthetic activations with a known tree instead of SmolLM2")
    demo.add_argument("--max-iter", type=int, default=None)
    demo.add_argument("--n-texts", type=int, default=None,
                      help="SmolLM2 demo: only the first N texts of every source (quick look)")
    demo.add_argument("--data-home", default=None,
                      help="SmolLM2 demo: activation cache folder (default ~/sklearn_hsae_data)")
    demo.add_argument("--random-state", type=int, default=0)
    demo.add_argument("--verbose", type=int, default=0)
    demo.set_defaults(run=_demo)

    extract = sub.add_parser("extract", help="residual-stream activations of texts (needs [llm])")
    extract.add_argument("--texts", required=True, help="a UTF-8 file, one text per line")
    extract.add_argument("--out", required=True, help="directory to write X.npy, tokens.npy, ...")
    extract.add_argument("--model", default="smollm2-135m")
    extract.add_argument("--layer", type=int, default=15)
    extract.add_argument("--batch-size", type=int, default=32)
    extract.set_defaults(run=_extract)

    fit = sub.add_parser("fit", help="fit a HierarchicalSparseAutoencoder and save it")
    fit.add_argument("activations", help="X.npy or a directory written by `extract`")
    fit.add_argument("--out", required=True, help="model directory (sklearn_hsae.io format)")
    fit.add_argument("--architecture", choices=("routed", "tree", "nested"), default="routed")
    fit.add_argument("--n-parents", type=int, default=1024)
    fit.add_argument("--n-children", type=int, default=16)
    fit.add_argument("--subspace-dim", type=int, default=4)
    fit.add_argument("--k", type=int, default=32)
    fit.add_argument("--n-levels", type=int, default=2)
    fit.add_argument("--max-iter", type=int, default=10)
    fit.add_argument("--batch-size", type=int, default=1024)
    fit.add_argument("--learning-rate", default="auto")
    fit.add_argument("--random-state", type=int, default=0)
    fit.add_argument("--checkpoint-dir", default=None)
    fit.add_argument("--verbose", type=int, default=1)
    fit.set_defaults(run=_fit)

    report = sub.add_parser("report", help="write the HTML hierarchy report of a saved model")
    report.add_argument("model_dir")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--activations", help="a directory written by `extract`")
    source.add_argument("--texts", help="a UTF-8 file, one text per line (needs [llm])")
    report.add_argument("--model", default="smollm2-135m")
    report.add_argument("--layer", type=int, default=15)
    report.add_argument("--n-parents", type=int, default=50)
    report.add_argument("--out", default="report.html")
    report.set_defaults(run=_report)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
