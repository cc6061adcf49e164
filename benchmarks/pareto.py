"""The efficiency front on SmolLM2: held-out quality against training wall time, per family.

Run from the repository root (the activation cache is built on first use)::

    python -m benchmarks.pareto                        # the whole grid (hours on 2 cores)
    python -m benchmarks.pareto --families routed topk --max-width 4096
    python -m benchmarks.pareto --quick                # smoke run, writes nothing unless --out

Data: SmolLM2-135M layer-15 activations (``fetch_text_activations``), whole texts held
out (``benchmarks/realdata.py``'s split). Every contender trains on the same tokens for
``--max-iter`` epochs of batch 1024 with ``random_state=0``; contenders run one after
another, never beside each other, in ``--repeats`` rounds that each fit every contender
once (interleaved, so a change of machine load between rounds hits all of them alike).
Per contender:

- ``fit_seconds``: wall time of ``fit`` (everything a user waits for), once per round,
  each with the 1-minute load average just before; the front uses the median. CPU fits
  are deterministic, so every round gives the same model (checked);
- ``held_out_ev`` (``score``) and, with ``--n-ce-texts``, CE loss recovered on that many
  held-out texts;
- ``reconstruction_l0``: atoms the model's own reconstruction adds up per row
  (``l0_``: flat ``k``; routed up to ``2k``, parent and child; tree ``k`` in the finest
  level, which reconstructs alone);
- ``train_gflop_per_token``: analytic, 3x the forward multiply-adds x 2 (backward costs
  twice the forward), with every dense encoder counted dense and every TopK decoder
  sparse (``k`` rows): flat ``d n + k d``; routed ``d P + k (2 s d + 2 s C) + k d``;
  tree ``sum_l (d w_l + k d)``.

Contenders (the grid of issue 11): routed H-SAE ``P x C``, ``s``, ``k=32`` (64 active
atoms), with the library's default ``compile="auto"`` (the child path compiled; the
first fit of a process pays the compilation, later ones reuse it) or, with
``--routed-compile no``, eager (family "routed eager"); flat TopK, BatchTopK and Matryoshka (prefixes ``[n / 8, n]``) of ``n`` latents
with ``k=64`` (equal active atoms) and ``k=32`` (paper 1's accounting, which counts
parents only); the tree HSAE ``n / 8 -> 7 n / 8`` (total width ``n``) with ``k`` per
level. Results accumulate in ``benchmarks/results/pareto.{json,md,png}``: a run replaces
the rows of the contenders it ran and keeps the others when tokens and epochs match.
``--wikipedia`` adds the gensim wheel's Wikipedia sample to the tokens (results in
``pareto_wikipedia.*``); with ``--max-iter 1`` a fit takes about as many steps as 5
epochs of the default corpus, on ~5x more distinct tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from benchmarks import _common as common
from benchmarks.realdata import _held_out_split

RESULTS = Path(__file__).parent / "results"
WIDTHS = (1024, 2048, 4096, 8192, 16384)
ROUTED = [(P, C, s) for P in (512, 1024, 2048) for C in (16, 64) for s in (4, 8)]
FLAT = ("topk", "batchtopk", "matryoshka")
FAMILIES = ("routed", "routed eager", *FLAT, "tree")


def contenders(families, widths, flat_k=(64, 32), routed=ROUTED, routed_compile="auto") -> dict:
    """name -> (family, unfitted estimator); the whole grid unless narrowed."""
    from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder

    common_params = dict(batch_size=1024, random_state=0, device="cpu")
    out = {}
    if "routed" in families:
        for P, C, s in routed:
            if P * (1 + C) > max(widths) * 8:  # --max-width narrows the routed grid too
                continue
            eager = routed_compile is False  # the child path without torch.compile
            out[f"routed {P}x{C} s={s} k=32" + (" eager" if eager else "")] = (
                "routed eager" if eager else "routed", HierarchicalSparseAutoencoder(
                    n_parents=P, n_children=C, subspace_dim=s, k=32, compile=routed_compile, **common_params))
    for n in widths:
        for k in flat_k:
            if "topk" in families:
                out[f"topk {n} k={k}"] = ("topk", SparseAutoencoder(n_components=n, k=k, **common_params))
            if "batchtopk" in families:
                out[f"batchtopk {n} k={k}"] = ("batchtopk", SparseAutoencoder(
                    n_components=n, k=k, activation="batchtopk", **common_params))
            if "matryoshka" in families:
                out[f"matryoshka {n} k={k}"] = ("matryoshka", SparseAutoencoder(
                    n_components=n, k=k, matryoshka_prefixes=[n // 8, n], **common_params))
            if "tree" in families:
                out[f"tree {n // 8}->{7 * n // 8} k={k}"] = ("tree", HierarchicalSparseAutoencoder(
                    architecture="tree", n_parents=n // 8, n_children=7, k=k, **common_params))
    return out


def train_gflop_per_token(est, d: int) -> float:
    """Analytic training GFLOP per token (see the module docstring)."""
    k = est.k
    if getattr(est, "architecture", None) == "routed":
        P, C, s = est.n_parents, est.n_children, est.subspace_dim
        macs = d * P + k * (2 * s * d + 2 * s * C) + k * d
    elif getattr(est, "architecture", None) == "tree":
        macs = sum(d * w + k * d for w in (est.n_parents, est.n_parents * est.n_children))
    else:
        macs = d * est.n_components + k * d
    return round(3 * 2 * macs / 1e9, 6)


def _reconstruction_l0(est) -> float:
    if getattr(est, "architecture", None) == "routed":
        return float(sum(est.l0_))
    return float(est.l0_[-1])


def fit_once(est, X_train, X_test) -> tuple[object, float, float, float]:
    """A fresh clone of ``est`` fitted: (fitted, seconds, load before, held-out EV)."""
    fitted = clone(est)
    load = common.load_average()[0]
    start = time.perf_counter()
    fitted.fit(X_train)
    seconds = round(time.perf_counter() - start, 2)
    return fitted, seconds, load, float(fitted.score(X_test))


def first_row(name, family, fitted, seconds, load, ev, d, texts) -> dict:
    """A contender's row from its first fit (CE loss recovered timed apart from it)."""
    from sklearn_hsae.metrics import ce_loss_recovered

    row = {
        "model": name, "family": family, "k": fitted.k,
        "width": int(sum(len(c) for c in fitted.components_by_level_)),
        "fit_seconds": [seconds], "fit_seconds_median": seconds, "load_1min": [load],
        "n_steps": fitted.n_steps_, "held_out_ev": round(ev, 4),
        "reconstruction_l0": round(_reconstruction_l0(fitted), 2),
        "train_gflop_per_token": train_gflop_per_token(fitted, d),
    }
    if texts:
        start = time.perf_counter()
        row["ce_loss_recovered"] = round(float(ce_loss_recovered(fitted, texts, layer=15)["ce_loss_recovered"]), 4)
        row["ce_seconds"] = round(time.perf_counter() - start, 1)
    return row


def add_repeat(row: dict, seconds: float, load: float, ev: float) -> None:
    """Another round's fit of the row's contender; refuses one that trained differently."""
    if round(ev, 4) != row["held_out_ev"]:
        raise RuntimeError(f"{row['model']}: repeated CPU fits disagree ({row['held_out_ev']} vs "
                           f"{ev}); timings would not be comparable")
    row["fit_seconds"].append(seconds)
    row["load_1min"].append(load)
    row["fit_seconds_median"] = round(statistics.median(row["fit_seconds"]), 2)


def front(rows) -> list[dict]:
    """Points no faster point of the same family beats or matches on held-out EV."""
    best, out = -np.inf, []
    for row in sorted(rows, key=lambda r: (r["fit_seconds_median"], -r["held_out_ev"])):
        if row["held_out_ev"] > best:
            out.append(row)
            best = row["held_out_ev"]
    return out


def acceptance(rows, ratio: float = 0.7) -> list[dict]:
    """For each flat TopK point: the fastest routed point with at least its EV, and
    whether it took at most ``ratio`` of the flat point's time."""
    routed = [r for r in rows if r["family"] == "routed"]
    out = []
    for flat in sorted((r for r in rows if r["family"] == "topk"), key=lambda r: (r["k"], r["width"])):
        good = [r for r in routed if r["held_out_ev"] >= flat["held_out_ev"]]
        fastest = min(good, key=lambda r: r["fit_seconds_median"], default=None)
        time_ratio = None if fastest is None else fastest["fit_seconds_median"] / flat["fit_seconds_median"]
        out.append({"flat": flat["model"], "flat_ev": flat["held_out_ev"],
                    "flat_seconds": flat["fit_seconds_median"],
                    "routed": None if fastest is None else fastest["model"],
                    "routed_ev": None if fastest is None else fastest["held_out_ev"],
                    "time_ratio": None if time_ratio is None else round(time_ratio, 3),
                    "passes": time_ratio is not None and time_ratio <= ratio})
    return out


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = ["# Efficiency front on SmolLM2 layer 15 (`python -m benchmarks.pareto`)", "",
             f"{report['machine']['date']}, {report['machine']['cpu_cores']} cores, "
             f"{report['machine']['threads']} threads, OMP_WAIT_POLICY "
             f"{report['machine'].get('omp_wait_policy') or 'unset'}; {report['n_train_tokens']:,} training tokens, "
             f"{report['n_test_tokens']:,} held-out tokens, {report['max_iter']} epochs of batch 1024, "
             f"{report['repeats']} timed fits per contender, in interleaved rounds. See the module docstring.", "",
             *([report["note"], ""] if report.get("note") else []),
             "## Every contender", "",
             "| model | held_out_ev | ce_loss_recovered | reconstruction_l0 | fit_seconds (median; all) | "
             "load_1min | train_gflop_per_token |", "|---|---:|---:|---:|---|---|---:|"]
    for r in sorted(rows, key=lambda r: (r["family"], r["k"], r["width"], r["model"])):
        lines.append(f"| {r['model']} | {r['held_out_ev']} | {r.get('ce_loss_recovered', '-')} | "
                     f"{r['reconstruction_l0']} | {r['fit_seconds_median']} ({', '.join(map(str, r['fit_seconds']))}) | "
                     f"{', '.join(map(str, r['load_1min']))} | {r['train_gflop_per_token']} |")
    lines += ["", "## Fronts (faster points first; each beats every faster point of its family)", ""]
    for family in FAMILIES:
        points = front([r for r in rows if r["family"] == family])
        if points:
            lines.append(f"- **{family}**: " + " -> ".join(
                f"{r['model']} ({r['held_out_ev']}, {r['fit_seconds_median']} s)" for r in points))
    lines += ["", "## Acceptance: a routed point with at least the flat TopK's EV in at most 0.7x its time", "",
              "| flat TopK | EV | seconds | fastest routed with >= EV | its EV | time ratio | passes |",
              "|---|---:|---:|---|---:|---:|---|"]
    for a in acceptance(rows):
        lines.append(f"| {a['flat']} | {a['flat_ev']} | {a['flat_seconds']} | {a['routed'] or 'none'} | "
                     f"{a['routed_ev'] if a['routed_ev'] is not None else '-'} | "
                     f"{a['time_ratio'] if a['time_ratio'] is not None else '-'} | {a['passes']} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for family in FAMILIES:
        points = [r for r in rows if r["family"] == family]
        if not points:
            continue
        line = ax.scatter([r["fit_seconds_median"] for r in points], [r["held_out_ev"] for r in points],
                          label=family, s=[18 if r["k"] == 32 else 36 for r in points], alpha=0.7)
        f = front(points)
        ax.plot([r["fit_seconds_median"] for r in f], [r["held_out_ev"] for r in f],
                color=line.get_facecolor()[0], alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training wall time of fit (s, median)")
    ax.set_ylabel("held-out explained variance")
    ax.set_title("SmolLM2 layer 15: quality against training time (small marks: k=32)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _kept_rows(path: Path, settings: dict, replaced: set) -> list[dict]:
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    if any(old.get(key, False if key == "wikipedia" else None) != value for key, value in settings.items()):
        raise SystemExit(f"{path} was measured with other settings ({ {k: old.get(k) for k in settings} }); "
                         "pass the same ones, or move the file away to start over.")
    return [r for r in old["rows"] if r["model"] not in replaced]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", choices=[f for f in FAMILIES if f != "routed eager"], default=list(FAMILIES),
                   help="contender families (default: all)")
    p.add_argument("--max-width", type=int, default=max(WIDTHS),
                   help="largest flat/tree width, and routed models up to 8x it (default: 16384)")
    p.add_argument("--routed", nargs="+", default=None, metavar="PxCxS",
                   help="routed configurations as n_parents x n_children x subspace_dim, e.g. 1024x16x4 "
                        "(default: the whole grid)")
    p.add_argument("--routed-compile", choices=("auto", "no"), default="auto",
                   help='the routed models\' compile parameter; "no" names them "... eager" (default: auto)')
    p.add_argument("--flat-k", type=int, nargs="+", default=[64, 32], help="k of the flat models (default: 64 32)")
    p.add_argument("--max-iter", type=int, default=5, help="epochs of every fit (default: 5)")
    p.add_argument("--repeats", type=int, default=2, help="timed fits per contender (default: 2)")
    p.add_argument("--n-ce-texts", type=int, default=50, help="held-out texts for CE loss recovered; 0 skips")
    p.add_argument("--n-held-out", type=int, default=300, help="held-out texts (default: 300)")
    p.add_argument("--data-home", default=None, help="activation cache (default: the package's)")
    p.add_argument("--wikipedia", action="store_true",
                   help="add the gensim wheel's Wikipedia sample to the corpus (~5x the tokens)")
    p.add_argument("--quick", action="store_true", help="one tiny contender per family; writes nothing unless --out")
    p.add_argument("--out", default=None, help="result folder (default: benchmarks/results, not with --quick)")
    args = p.parse_args(argv)

    from sklearn_hsae.datasets import fetch_text_activations

    data = fetch_text_activations(args.data_home, layer=15, wikipedia=args.wikipedia, verbose=1)
    held, train, test = _held_out_split(data, args.n_held_out, seed=0)
    widths = [w for w in WIDTHS if w <= args.max_width]
    routed = ROUTED if args.routed is None else [tuple(int(v) for v in r.split("x")) for r in args.routed]
    grid = contenders(args.families, widths, tuple(args.flat_k), routed,
                      {"auto": "auto", "no": False}[args.routed_compile])
    if args.quick:
        grid = contenders(args.families, [1024], (32,), routed=[(128, 16, 4)])
        args.max_iter, args.n_ce_texts = 1, min(args.n_ce_texts, 5)
    texts = [data.texts[i] for i in held[: args.n_ce_texts]]
    out = Path(args.out) if args.out else (None if args.quick else RESULTS)
    settings = {"wikipedia": args.wikipedia, "max_iter": args.max_iter,
                "n_train_tokens": int(train.sum()), "n_test_tokens": int(test.sum()),
                "n_ce_texts": args.n_ce_texts}
    stem = "pareto_wikipedia" if args.wikipedia else "pareto"  # another corpus: another file
    rows = _kept_rows(out / f"{stem}.json", settings, set(grid)) if out else []
    report = {"machine": common.machine_info(torch.get_num_threads()), **settings, "repeats": args.repeats}
    X_train, X_test = data.X[train], data.X[test]
    ran: dict[str, dict] = {}
    for round_ in range(args.repeats):  # every contender once per round: interleaved
        for name, (family, est) in grid.items():
            est.set_params(max_iter=args.max_iter)
            fitted, seconds, load, ev = fit_once(est, X_train, X_test)
            if round_ == 0:
                ran[name] = first_row(name, family, fitted, seconds, load, ev, data.X.shape[1], texts)
                rows.append(ran[name])
            else:
                add_repeat(ran[name], seconds, load, ev)
            del fitted
            print(json.dumps(ran[name]), flush=True)
            report["rows"] = rows
            if out:  # after every fit: a long run interrupted keeps what it measured
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
                (out / f"{stem}.md").write_text(markdown(report))
                plot(rows, out / f"{stem}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
