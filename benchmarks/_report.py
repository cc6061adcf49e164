"""Ratios against their targets, and the markdown tables the README quotes."""

from __future__ import annotations

# (numerator, denominator, target, stretch): contenders named by (library, kind, width);
# width None = the widest flat TopK of the run, "small"/"mid" = the first/second width.
TARGETS = [
    (("sklearn_hsae", "routed", None), ("sparsify", "TopK", "max"), 2.5, 4.0),
    (("sklearn_hsae", "routed", None), ("sklearn_hsae", "TopK", "small"), 0.6, 0.9),
    (("sklearn_hsae", "TopK", "small"), ("sparsify", "TopK", "small"), 1.0, None),
    (("sklearn_hsae", "TopK", "mid"), ("sparsify", "TopK", "mid"), 1.0, None),
    (("sklearn_hsae", "TopK", "max"), ("sparsify", "TopK", "max"), None, None),
    (("sklearn_hsae", "aux_coef=0", "max"), ("sparsify", "TopK", "max"), None, None),
    (("sklearn_hsae", "routed", None), ("sae_lens", "TopK", "max"), None, None),
    (("sklearn_hsae", "routed", None), ("sklearn_hsae", "eager", None), None, None),  # compile's gain
    (("sklearn_hsae", "TopK", "small"), ("sae_lens", "TopK", "small"), None, None),
]


def _find(results: dict, key, widths) -> str | None:
    library, kind, which = key
    width = {"small": widths[0], "mid": widths[min(1, len(widths) - 1)], "max": widths[-1],
             None: None}[which]
    for name, r in results.items():
        if r["library"] == library and f" {kind} " in f" {name} " and (width is None or r["width"] == width):
            return name
    return None


def ratio_table(results: dict, widths) -> list[dict]:
    """Tokens/s ratios of this run's contenders, with their targets where the issue set one."""
    widths = sorted(widths)
    out, seen = [], set()
    for num, den, target, stretch in TARGETS:
        a, b = _find(results, num, widths), _find(results, den, widths)
        if a is None or b is None or (a, b) in seen:
            continue
        seen.add((a, b))
        value = results[a]["tokens_per_s"] / results[b]["tokens_per_s"]
        out.append({"numerator": a, "denominator": b, "ratio": round(value, 2), "target": target,
                    "stretch": stretch, "met": None if target is None else value >= target})
    return out


def _step_contents() -> str:
    from . import _contenders

    return _contenders.__doc__.split("\n\n", 2)[2].strip()


def _verdict(r: dict) -> str:
    if r["target"] is None:
        return "(no target)"
    text = f"target >= {r['target']}: {'met' if r['met'] else 'NOT met'}"
    if r.get("stretch"):
        text += f"; stretch {r['stretch']}: {'met' if r['ratio'] >= r['stretch'] else 'not met'}"
    return text


def train_markdown(p: dict) -> str:
    m, data = p["machine"], p["data"]
    lines = [
        "# Training speed (one interleaved run)",
        "",
        f"{m['date']} on {m['cpu_model']}, {m['cpu_cores']} cores, {m['threads']} torch threads, "
        f"torch {m['versions']['torch']}, OMP_WAIT_POLICY={m['omp_wait_policy']}; "
        f"load average {m['load_average_start']} at the start, {m.get('load_average_end')} at the end "
        "(the machine was shared: compare ratios, not absolute figures); "
        f"commit {m['git']['commit'][:10]}{' (dirty)' if m['git']['dirty'] else ''}.",
        f"Data: {data['kind']} activations ({data['origin']}), d=576 float32.",
        "",
        "| contender | atoms | rows/step | median s/step | tokens/s | CPU/wall | peak RSS over baseline (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    memory = p.get("memory", {})
    for name, r in p["contenders"].items():
        mem = memory.get(name, {}).get("own_peak_mib", "-")
        lines.append(f"| {name} | {r['width']} | {r['rows_per_step']} | {r['median_step_s']:.3f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['cpu_per_wall']} | {mem} |")
    s = p["settings"]
    lines += ["", f"Tokens/s = rows per step / median of {s['rounds']} timed steps (after the first, "
              f"untimed, step and {s['warmup']} warm-up rounds), one step per contender per round, the "
              "order rotated every round. CPU/wall = process CPU time over wall time (2.0 would be both "
              "cores ours alone). Peak RSS: each contender alone in a fresh interpreter, the highest RSS "
              "(VmHWM) over build + 3 steps minus the RSS after imports and data.", "",
              "What one step includes:", "", _step_contents(), "", "## Ratios (tokens/s, same run)", "",
              "| ratio | value | verdict |", "|---|---:|---|"]
    for r in p["ratios"]:
        lines.append(f"| {r['numerator']} / {r['denominator']} | {r['ratio']:.2f} | {_verdict(r)} |")
    q = p.get("quality")
    if q:
        lines += ["", "## H-SAE fit vs MiniBatchDictionaryLearning (same data, 2048 atoms, L0 32)", "",
                  q["design"], "",
                  "| model | samples/s (training) | rows seen | held-out FVU | L0 |", "|---|---:|---:|---:|---:|"]
        for row in q["rows"]:
            lines.append(f"| {row['model']} | {row['samples_per_s']:,.1f} | {row['rows_seen']:,} | "
                         f"{row['fvu']:.3f} | {row['l0']:.1f} |")
        lines += ["", q["verdict"]]
    for g in p.get("gemm", []):
        lines += ["", f"Encoder GEMM of {g['contender']} (B, d, m = {g['shape']}): ours (addmm into the "
                  f"reused buffer) {g['ours_gflops']} GFLOP/s vs plain torch.mm {g['plain_mm_gflops']} GFLOP/s."]
    for prof in p.get("profiles", []):
        lines += ["", f"### Profile of one step: {prof['contender']} ({prof['wall_s_profiled']} s profiled)", "",
                  "| op | calls | self ms | self % |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']} | {o['self_pct']} |" for o in prof["top_ops"]]
    return "\n".join(lines) + "\n"
