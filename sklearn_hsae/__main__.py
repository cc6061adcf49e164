"""Command line: ``python -m sklearn_hsae {demo, extract, fit, report} ...``.

A typical session, from raw text to a browsable page::

    python -m sklearn_hsae extract --texts corpus.txt --out acts/      # SmolLM2 layer 15
    python -m sklearn_hsae fit acts/ --out model/ --n-parents 1024 --k 32
    python -m sklearn_hsae report model/ --activations acts/ --out report.html

Activations live in a directory of ``.npy`` files (``X.npy``, and for reports
``tokens.npy``, ``doc_index.npy``, ``position.npy``), read without pickle; ``fit``
memory-maps ``X.npy``, so it may be larger than memory. Every command shows progress
bars on stderr unless ``--quiet``; results go to stdout.
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
    from ._demo import call_with_verbose
    from .datasets import extract_activations

    texts = _read_lines(args.texts)
    start = time.perf_counter()
    acts = call_with_verbose(extract_activations, texts, model=args.model, layer=args.layer,
                             batch_size=args.batch_size, verbose=args.verbose)
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
        compile={"auto": "auto", "yes": True, "no": False}[args.compile],
    )
    start = time.perf_counter()
    est.fit(X)
    # The saved model keeps the library's quiet default: a user who loads it in Python
    # should not get progress bars from every transform.
    save(est.set_params(verbose=0), args.out)
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
        from ._demo import call_with_verbose
        from .datasets import extract_activations

        acts = call_with_verbose(extract_activations, _read_lines(args.texts), model=args.model,
                                 layer=args.layer, verbose=args.verbose)
    est = load(args.model_dir).set_params(verbose=args.verbose)  # the CLI's --quiet governs all bars
    path = hierarchy_report(est, acts, args.out, n_shown_parents=args.n_shown_parents,
                            verbose=args.verbose)
    print(f"report written to {path}")
    return 0


def _demo(args) -> int:
    from ._demo import run_demo

    return run_demo(args)


def _add(parser, *flags, help, shown_default=None, **kwargs):
    """An argument whose help ends with its default (or "required"), so --help says it."""
    if kwargs.get("required") or not flags[0].startswith("-"):
        said = "required"
    elif kwargs.get("action") == "store_true":
        said = "default: off"
    elif shown_default is not None:
        said = f"default: {shown_default}"
    elif kwargs.get("default") is not None:
        said = f"default: {kwargs['default']}"
    else:
        raise ValueError(f"{flags[0]} has no default: say what its absence means.")
    if kwargs.get("type") is int and flags[0].startswith("-"):
        kwargs.setdefault("metavar", "N")
    parser.add_argument(*flags, help=f"{help} ({said})", **kwargs)


def _add_progress(parser, verbose=1):
    """--verbose N and --quiet, the same on every command."""
    group = parser.add_mutually_exclusive_group()
    _add(group, "--verbose", type=int, default=verbose, metavar="N",
         help="progress on stderr: 0 none, 1 or more progress bars with rate and time left")
    _add(group, "--quiet", action="store_true",
         help="no progress bars, as --verbose 0; results still go to stdout")


def _command(sub, name, run, help, description):
    parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(run=run)
    return parser


def _demo_parser(sub):
    demo = _command(
        sub, "demo", _demo, "fit an H-SAE on built-in data and print what it found",
        "Fit the default routed H-SAE on SmolLM2-135M layer-15 activations of a small English "
        "corpus (extracted once, about 2-10 min on 2 cores, then read from the cache; needs the "
        "[llm] extra) and print held-out FVU, L0, CE loss recovered and a few parents with their "
        "children; with --synthetic, on synthetic activations with a known tree, next to a flat "
        "TopK SAE of the same width. Every stage prints its name and its wall time.")
    _add(demo, "--synthetic", action="store_true",
         help="synthetic activations with a known tree instead of SmolLM2")
    _add(demo, "--max-iter", type=int, shown_default="80 with --synthetic, 5 otherwise",
         help="epochs of every fit")
    _add(demo, "--n-texts", type=int, shown_default="every text",
         help="SmolLM2 demo: only the first N texts of every source, for a quick look")
    _add(demo, "--data-home", metavar="DIR",
         shown_default="$SKLEARN_HSAE_DATA, else ~/sklearn_hsae_data",
         help="SmolLM2 demo: folder of the activation cache")
    _add(demo, "--random-state", type=int, default=0, help="seed of the split and of every fit")
    _add_progress(demo)


def _extract_parser(sub):
    extract = _command(
        sub, "extract", _extract, "residual-stream activations of texts (needs [llm])",
        "Run a causal LM over every line of a UTF-8 file and write the residual stream after "
        "one block, one row per token, as X.npy, tokens.npy (fixed-width strings), doc_index.npy "
        "and position.npy, all readable without pickle. Needs the [llm] extra.")
    _add(extract, "--texts", metavar="FILE", required=True, help="a UTF-8 file, one text per line")
    _add(extract, "--out", metavar="DIR", required=True,
         help="directory to write X.npy, tokens.npy, ... into")
    _add(extract, "--model", metavar="NAME", default="smollm2-135m",
         help="smollm2-135m or a local directory holding a Hugging Face causal LM")
    _add(extract, "--layer", type=int, default=15,
         help="read the residual stream after this block (1 to the block count)")
    _add(extract, "--batch-size", type=int, default=32, help="texts per forward pass")
    _add_progress(extract)


def _fit_parser(sub):
    fit = _command(
        sub, "fit", _fit, "fit a HierarchicalSparseAutoencoder and save it",
        "Fit a HierarchicalSparseAutoencoder on X.npy (memory-mapped, so it may be larger than "
        "memory), save it with sklearn_hsae.io.save and print the fit time, the number of steps, "
        "and FVU and L0 per level on the first 20,000 rows.")
    _add(fit, "activations", help="X.npy, or a directory written by `extract`")
    _add(fit, "--out", metavar="DIR", required=True,
         help="model directory to write (sklearn_hsae.io format)")
    _add(fit, "--architecture", choices=("routed", "tree", "nested"), default="routed",
         help="routed H-SAE (Muchane et al. 2025), tree HSAE (Luo et al. 2026) or nested Tree SAE (Cao et al. 2026)")
    _add(fit, "--n-parents", type=int, default=1024,
         help="width of the parent dictionary (the model's n_parents)")
    _add(fit, "--n-children", type=int, default=16, help="children per parent")
    _add(fit, "--subspace-dim", type=int, default=4,
         help="routed: dimension of each parent's subspace, where its children live")
    _add(fit, "--k", type=int, default=32,
         help="routed: active parents per token; tree: active latents per token and level")
    _add(fit, "--n-levels", type=int, default=2, help="tree: number of levels")
    _add(fit, "--max-iter", type=int, default=10, help="epochs over X")
    _add(fit, "--batch-size", type=int, default=1024, help="rows per training step")
    _add(fit, "--learning-rate", metavar="LR", default="auto",
         help="peak Adam learning rate, or auto: min(5e-3, 8e-4 / sqrt(width / 2**14)) with width "
              "n_parents (routed) or each level's width (tree, nested: one rate per level)")
    _add(fit, "--random-state", type=int, default=0, help="seed of initialisation and shuffling")
    _add(fit, "--checkpoint-dir", metavar="DIR", shown_default="none, no checkpoints",
         help="folder for checkpoints; an interrupted fit resumes from it when run again")
    _add(fit, "--compile", choices=("auto", "yes", "no"), default="auto",
         help="compiled kernels: the routed child path (C on CPU, built once with the "
              "system compiler; torch.compile on CUDA) and, on CPU, every architecture's sparse "
              "gradients. auto: when a compiler is present; a failed build falls back to eager "
              "with a warning")
    _add_progress(fit)


def _report_parser(sub):
    report = _command(
        sub, "report", _report, "write the HTML hierarchy report of a saved model",
        "Load a model saved by `fit` and write its self-contained HTML hierarchy report "
        "(sklearn_hsae.report.hierarchy_report), the two summary plots beside it, for the "
        "activations of a directory written by `extract` or of a text file extracted on the fly.")
    _add(report, "model_dir", help="a model directory written by `fit` or sklearn_hsae.io.save")
    source = report.add_mutually_exclusive_group(required=True)
    _add(source, "--activations", metavar="DIR", shown_default="none; give this or --texts",
         help="a directory written by `extract`")
    _add(source, "--texts", metavar="FILE", shown_default="none; give this or --activations",
         help="a UTF-8 file, one text per line, extracted on the fly (needs [llm])")
    _add(report, "--model", metavar="NAME", default="smollm2-135m",
         help="with --texts: the causal LM to run")
    _add(report, "--layer", type=int, default=15, help="with --texts: the block to read after")
    _add(report, "--n-shown-parents", type=int, default=50,
         help="coarsest-level latents the page lists (not the model's width, --n-parents of fit)")
    _add(report, "--out", metavar="FILE", default="report.html",
         help="the HTML file; the plots go beside it")
    _add_progress(report)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_hsae",
        description="Hierarchical sparse autoencoders from the command line: extract token "
                    "activations, fit, report; demo shows it all on built-in data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_demo_parser, _extract_parser, _fit_parser, _report_parser):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.quiet:
        args.verbose = 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
