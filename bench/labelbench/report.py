"""Markdown tables and a PNG of one suite run (rows as written by `label_suite.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .methods import BASELINES

SHOWN = ("majority", "weighted", "snorkel", "dawid_skene", "hyper_lm", "assay_v0", "assay")


def _goal(row: dict, method: str) -> float | None:
    scores = row["methods"].get(method)
    return None if scores is None else scores["goal"]


def kind(row: dict) -> str:
    """What kind of set a row is: synthetic, Jigsaw (rules, MiniLM and GPT-4 sources) or real keyword lists."""
    return row["family"] if row["family"] in ("synthetic", "jigsaw") else "keyword lists"


def by_kind(rows: list[dict], methods: tuple[str, ...] = ("majority", "snorkel", "assay")) -> dict[str, dict]:
    """Per kind of set: how many sets, and each method's mean goal metric over them (as `summary` means)."""
    kinds = sorted({kind(row) for row in rows})
    return {k: {"sets": sum(kind(r) == k for r in rows),
                **{m: v for m, v in summary([r for r in rows if kind(r) == k])["means"].items() if m in methods}}
            for k in kinds}


def summary(rows: list[dict]) -> dict:
    """Goal checks: assay vs majority (-0.01), vs the best baseline per set (-0.02), mean vs best-on-average."""
    per_set, means = [], {}
    subject = "assay" if any(row["methods"].get("assay") for row in rows) else "assay_v0"
    for row in rows:
        assay, mv = _goal(row, subject), _goal(row, "majority")
        best = max((g for g in (_goal(row, m) for m in BASELINES) if g is not None), default=None)
        per_set.append({"set": row["set"], "assay": assay, "majority": mv, "best": best,
                        "ok_mv": assay is not None and assay >= mv - 0.01,
                        "ok_best": assay is not None and assay >= best - 0.02})
    for method in [m for m in SHOWN if any(r["methods"].get(m) for r in rows)]:
        values = [_goal(r, method) for r in rows]
        if all(v is not None for v in values):
            means[method] = round(float(np.mean(values)), 4)
        else:  # a method that cannot run on a set (Snorkel < 3 sources) scores as majority vote there
            means[method] = round(float(np.mean([v if v is not None else _goal(r, "majority")
                                                 for v, r in zip(values, rows)])), 4)
    best_mean = max((means[m] for m in BASELINES if m in means), default=float("nan"))
    return {"subject": subject, "per_set": per_set, "means": means, "best_baseline_mean": best_mean,
            "mean_best_per_set": round(float(np.mean([s["best"] for s in per_set])), 4),
            "fails_mv": [s["set"] for s in per_set if not s["ok_mv"]],
            "fails_best": [s["set"] for s in per_set if not s["ok_best"]]}


def tables(rows: list[dict], part: str, margins: dict[str, list[float]] | None = None,
           balance: str = "est. balance") -> str:
    """One overview table (goal metric per set and method; `balance` heads the class-balance column), the goal
    checks (with `margins`, as written by `label_suite.mean_margins`: the mean margin over each baseline and its
    interval), then one table per set."""
    lines = [f"### Part `{part}`: goal metric per set", "",
             f"| set | n | sources | true P(yes) | {balance} | goal | " + " | ".join(SHOWN) + " |",
             "|---|---:|---:|---:|---:|---|" + "---:|" * len(SHOWN)]
    for row in rows:
        cells = []
        for method in SHOWN:
            goal = _goal(row, method)
            cells.append("n/a" if goal is None else f"{goal:.3f}")
        lines.append(f"| {row['set']} | {row['n']:,} | {row['sources']} | {row['true_rate']:.3f} | "
                     f"{row['balance']:.3f} | {row['goal']} | " + " | ".join(cells) + " |")
    s = summary(rows)
    lines.append("| **mean** | | | | | | " + " | ".join(f"**{s['means'][m]:.3f}**" if m in s["means"] else ""
                                                     for m in SHOWN) + " |")
    who = s["subject"]
    lines += ["", f"Mean of the best baseline per set: {s['mean_best_per_set']:.3f}; best baseline on average: "
              f"{s['best_baseline_mean']:.3f}; {who}: {s['means'][who]:.3f}.",
              f"Sets where {who} is below majority vote by more than 0.01: {', '.join(s['fails_mv']) or 'none'}.",
              f"Sets where {who} is below the best baseline by more than 0.02: {', '.join(s['fails_best']) or 'none'}."]
    kinds = by_kind(rows)
    lines.append("Mean goal metric by kind of set: " + "; ".join(
        f"{k} ({v['sets']}): " + ", ".join(f"{m} {x:.3f}" for m, x in v.items() if m != "sets")
        for k, v in kinds.items()) + ".")
    if margins:
        lines.append(f"Mean margin of {who} over each method, with 95 % intervals from resampling the records within "
                     "every set: " + "; ".join(f"{m} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, (d, lo, hi) in margins.items())
                     + ".")
    lines.append("")
    for row in rows:
        lines += [f"#### {row['set']} ({part})", "",
                  "| method | accuracy | F1 (yes) | goal | labelled yes | constant | Δ goal assay − method [95 % CI] |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for method in SHOWN:
            m = row["methods"].get(method)
            if m is None:
                lines.append(f"| {method} | n/a | n/a | n/a | n/a | | |")
                continue
            delta = row.get("delta_vs", {}).get(method)
            d = f"{delta[0]:+.3f} [{delta[1]:+.3f}, {delta[2]:+.3f}]" if delta else ""
            lines.append(f"| {method} | {m['accuracy']:.3f} | {m['f1']:.3f} | {m['goal']:.3f} | {m['yes_rate']:.3f} | "
                         f"{'yes' if m['constant'] else ''} | {d} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, part: str) -> None:
    """Goal metric of assay against the best baseline and majority vote, one point per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary(rows)
    names = [p["set"] for p in s["per_set"]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(names)), 4.5))
    ax.scatter(x, [p["best"] for p in s["per_set"]], marker="_", s=200, color="grey", label="best baseline (per set)")
    ax.scatter(x, [p["majority"] for p in s["per_set"]], marker="x", color="#c44e52", label="majority vote")
    ax.scatter(x, [p["assay"] for p in s["per_set"]], marker="o", color="#4c72b0", label="assay")
    ax.set_xticks(x, names, rotation=75, ha="right", fontsize=7)
    ax.set(ylabel="goal metric (accuracy or rare-class F1)", ylim=(0, 1.02), title=f"label-model suite, part {part}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
