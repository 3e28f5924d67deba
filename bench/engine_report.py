"""Figures, profile, Markdown and plot of bench/bench_engine.py (the engine against its baselines)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {"engine": "engine", "engine_lora_off": "engine, LoRA off", "engine_all_queries": "engine, all queries",
          "engine_whole_last_layer": "engine, whole last layer", "peft_one_at_a_time": "(1) PEFT one at a time",
          "peft_mixed": "(2) PEFT mixed", "peft_shared_lower": "(3) PEFT cached lower layers",
          "merged_per_question": "(4) merged per question", "base_alone": "(5) base alone"}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def figures(seconds: dict[str, list[float]], n: int, k: int, engine_flops: float, base_flops: float,
            baselines: Sequence[str], peak: float, probes: Sequence[float]) -> dict[str, Any]:
    """One cell's figures on one clock: rec x q/s per method and repeat, the engine's ratio to the strongest
    baseline of each repeat, its variants' cost, MFU (against the start-of-run limit and the probes around
    each engine run) and the LoRA overhead per adapter against the base alone."""
    rqps = {m: [n * (1 if m == "base_alone" else k) / t for t in v] for m, v in seconds.items()}
    out: dict[str, Any] = {"seconds": seconds, "rqps": rqps, "rqps_spread": {m: spread(v) for m, v in rqps.items()}}
    present = [b for b in baselines if b in rqps]
    repeats = len(rqps["engine"])
    if present:
        strongest = [max(present, key=lambda b: rqps[b][r]) for r in range(repeats)]
        out["strongest_per_repeat"] = strongest
        out["vs_strongest"] = [rqps["engine"][r] / rqps[strongest[r]][r] for r in range(repeats)]
    for variant in ("engine_lora_off", "engine_all_queries", "engine_whole_last_layer"):
        if variant in seconds:  # > 0: the variant takes longer than the engine as shipped
            out[f"{variant}_vs_engine"] = [v / e - 1 for v, e in zip(seconds[variant], seconds["engine"])]
    out["engine_gflops_per_s"] = [engine_flops / t / 1e9 for t in seconds["engine"]]
    out["mfu"] = [g / peak for g in out["engine_gflops_per_s"]]  # useful FLOPs (real tokens)
    out["matmul_probe_gflops"] = list(probes)
    out["mfu_vs_probe"] = [g / p for g, p in zip(out["engine_gflops_per_s"], probes)]
    if "base_alone" in seconds:
        out["base_mfu"] = [base_flops / t / 1e9 / peak for t in seconds["base_alone"]]
        out["lora_overhead_per_adapter"] = [(e / b - 1) / k for e, b in zip(seconds["engine"], seconds["base_alone"])]
    return out


def token_stats(lengths: Sequence[int], work, truncated: int, in_order_batch: int = 32) -> dict[str, Any]:
    """Token lengths of the records and the padded tokens of length-sorted vs input-order batches."""
    t = np.asarray(lengths)
    sorted_padded = sum(len(b.indices) * b.input_ids.shape[1] for b in work.batches(copies=1))
    in_order = sum(len(t[i:i + in_order_batch]) * int(t[i:i + in_order_batch].max())
                   for i in range(0, len(t), in_order_batch))
    return {"records": int(len(t)), "tokens": int(t.sum()), "mean": float(t.mean()), "median": float(np.median(t)),
            "p75": float(np.percentile(t, 75)), "p95": float(np.percentile(t, 95)), "max": int(t.max()),
            "truncated": int(truncated), "padded_tokens_sorted_budget": int(sorted_padded),
            f"padded_tokens_input_order_{in_order_batch}": int(in_order)}


def profile(run: Callable, work, path: Path, rows: int = 25) -> list[dict[str, Any]]:
    """Profile one engine run with torch.profiler; write the op table to ``path``, return the top ops' shares."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run(work)
    averages = prof.key_averages()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(averages.table(sort_by="self_cpu_time_total", row_limit=rows) + "\n")
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:8]
    return [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count} for e in top]


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f})"


def _ratio(values: Sequence[float], fmt: str = ".2f", suffix: str = "×") -> str:
    s = spread(values)
    return f"{s['median']:{fmt}}{suffix} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def markdown(results: dict, args) -> str:
    """The run as Markdown: token and matmul figures, then one table per clock (CPU seconds, wall-clock)."""
    ts = results["token_stats"]
    padded = ts["padded_tokens_input_order_32"]
    rates = ", ".join(f"{r['rows']}×{r['in']}→{r['out']}: {r['gflops_cpu']:.0f}" for r in results["matmul_rates"])
    peak = results["peak_gflops"]
    lines = [f"Records: {ts['records']} (tokens mean {ts['mean']:.1f}, median {ts['median']:.0f}, p95 {ts['p95']:.0f}, "
             f"max {ts['max']}, {ts['truncated']} cut at {args.max_length}); padded tokens, length-sorted budget "
             f"{ts['padded_tokens_sorted_budget']:,} vs input-order batches of 32 {padded:,}.", "",
             f"F.linear GFLOP/s per CPU second at the engine's shapes (fp32, {args.threads} thread(s)): {rates}; "
             f"limit used for MFU: {peak['cpu']:.0f} per CPU second, {peak['wall']:.0f} wall-clock.", ""]
    for clock, title in (("cpu", "process CPU seconds"), ("wall", "wall-clock")):
        lines += [f"Records × questions / s on {title}, median of the repeats (min–max):", "",
                  *_table(results, clock), ""]
    return "\n".join(lines)


def _table(results: dict, clock: str) -> list[str]:
    cells_in = [c[clock] | {k: c[k] for k in ("depth", "adapters", "records", "max_abs_dp")} for c in results["cells"]]
    methods = [m for m in LABELS if any(m in c["rqps"] for c in cells_in)]
    head = ["depth", "adapters", "records", *[LABELS[m] for m in methods], "engine ÷ strongest of 1–4", "strongest",
            "max \\|ΔP\\|", "MFU (vs limit at start / around the run)", "LoRA overhead per adapter"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells_in:
        row = [c["depth"], str(c["adapters"]), str(c["records"])]
        row += [_fmt(c["rqps_spread"][m]) if m in c["rqps"] else "–" for m in methods]
        row.append(_ratio(c["vs_strongest"]) if "vs_strongest" in c else "–")
        row.append(", ".join(sorted({LABELS[s][:3] for s in c.get("strongest_per_repeat", [])})) or "–")
        dp = [v for m, v in c["max_abs_dp"].items() if m != "engine"]
        row.append(f"{max(dp):.1e}" if dp else "–")
        row.append(f"{_ratio(c['mfu'], '.0%', '')} / {_ratio(c['mfu_vs_probe'], '.0%', '')}")
        overhead = c.get("lora_overhead_per_adapter")
        row.append(_ratio(overhead, "+.1%", "") if overhead else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def cell_line(cell: dict) -> str:
    """One line of progress per finished cell (CPU-second figures)."""
    c = cell["cpu"]
    parts = [f"{cell['depth']} x{cell['adapters']}:"] + [f"{m} {c['rqps_spread'][m]['median']:,.0f}" for m in c["rqps"]]
    if "vs_strongest" in c:
        parts.append(f"vs strongest {np.median(c['vs_strongest']):.2f}x")
    parts.append(f"MFU {np.median(c['mfu']):.0%}")
    return " | ".join(parts)


def plot(results: dict, path: Path) -> None:
    """Grouped bars of records x questions / s per method, one panel per depth (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = list(dict.fromkeys(c["depth"] for c in results["cells"]))
    fig, axes = plt.subplots(1, len(depths), figsize=(max(7.0, 5.5 * len(depths)), 4.8), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        cells = [c for c in results["cells"] if c["depth"] == depth]
        methods = [m for m in LABELS if m in cells[0]["cpu"]["rqps"]]
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            ys = [c["cpu"]["rqps_spread"][m]["median"] for c in cells]
            ax.bar(np.arange(len(cells)) + j * width, ys, width, label=LABELS[m])
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, [str(c["adapters"]) for c in cells])
        ax.set_yscale("log")
        ax.set_xlabel("adapters")
        ax.set_ylabel("records × questions / CPU second")
        ax.set_title(f"MiniLM, adapters on {depth}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

