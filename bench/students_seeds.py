"""How much of the students' lead is the training seed's: `students_vs_baselines.py` results for several seeds, side by side.

    .venv/bin/python bench/students_seeds.py bench/results/students_vs_baselines_stated.json \
        bench/results/students_vs_baselines_stated_seed{1,2,3,4}.json --out bench/results/students_seeds

Each input is one run of ``students_vs_baselines.py --seed N`` on the same label run (the seed sets the hold-out
split, the initialisation and the shuffling of the students, the oracle and the trained baselines alike). Per
set and seed: macro-F1 of the student, the oracle and each baseline, and the student's paired lead over each
baseline; over the seeds: the mean, the range and a 95 % t-interval of the mean. Writes OUT.json, OUT.md and
OUT.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402
from students_report import MARGIN  # noqa: E402
from students_report import NAMES as REPORT_NAMES  # noqa: E402

BASELINES = ("tfidf_lr", "embedding_lr", "keyword_rules")  # SetFit is too slow to run for every seed
NAMES = {m: REPORT_NAMES[m] for m in ("student", "oracle", *BASELINES)}


def read_run(path: Path) -> dict:
    """{set: {"macro": {method: F1}, "lead": {baseline: student minus it}}, "seed": N} of one result file."""
    data = json.loads(path.read_text())
    out = {"seed": data["config"].get("seed", 0), "file": path.name}
    for split in ("dev", "untouched"):
        methods, gpt4 = data["results"][split]["methods"], data["results"][split]["gpt4_is_bad"]
        out[split] = {"macro": {m: methods[m]["macro"]["f1"] for m in NAMES if m in methods},
                      "lead": {b: methods["student"]["macro"]["f1"] - methods[b]["macro"]["f1"]
                               for b in BASELINES if b in methods},
                      "oracle_share": methods["student"]["macro"]["f1"] / methods["oracle"]["macro"]["f1"],
                      "is_bad_minus_gpt4": gpt4["student_minus_gpt4"][0],
                      "is_bad_cascade_minus_gpt4": gpt4["cascade"]["student_cascade_minus_gpt4"][0]}
    return out


def over_seeds(values: list[float]) -> dict:
    """Mean, range and the 95 % t-interval of the mean of per-seed values."""
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "low": float(v.mean() - half), "high": float(v.mean() + half), "values": v.tolist()}


def summarise(runs: list[dict]) -> dict:
    """Per set: each method's macro-F1, the leads and the oracle share over the seeds."""
    out = {}
    for split in ("dev", "untouched"):
        out[split] = {"macro": {m: over_seeds([r[split]["macro"][m] for r in runs]) for m in NAMES},
                      "lead": {b: over_seeds([r[split]["lead"][b] for r in runs]) for b in BASELINES},
                      **{key: over_seeds([r[split][key] for r in runs])
                         for key in ("oracle_share", "is_bad_minus_gpt4", "is_bad_cascade_minus_gpt4")}}
    return out


def markdown(runs: list[dict], summary: dict) -> str:
    """The report: one table per set, a row per method, a column per seed and the summary."""
    seeds = [r["seed"] for r in runs]
    lines = []
    for split in ("dev", "untouched"):
        lines += [f"**{split}**", "", "| macro-F1 | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean [95 % t-interval] | range |", "|---|" + "---:|" * (len(seeds) + 2)]
        # (row name, summary, "+" where the row is a difference)
        rows = [(NAMES[m], summary[split]["macro"][m], "") for m in NAMES]
        rows += [(f"student − {NAMES[b]}", summary[split]["lead"][b], "+") for b in BASELINES]
        rows += [("share of the oracle", summary[split]["oracle_share"], ""),
                 ("is_bad student − GPT-4 (records GPT-4 answered)", summary[split]["is_bad_minus_gpt4"], "+"),
                 ("is_bad student with the 5 % cascade − GPT-4", summary[split]["is_bad_cascade_minus_gpt4"], "+")]
        for name, s, sign in rows:
            cells = " | ".join(f"{v:{sign}.3f}" for v in s["values"])
            lines.append(f"| {name} | {cells} | {s['mean']:{sign}.3f} [{s['low']:{sign}.3f}, {s['high']:{sign}.3f}] | "
                         f"{s['min']:{sign}.3f} to {s['max']:{sign}.3f} |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    """The student's lead over each baseline per seed (dots) and its mean with the t-interval (bar), per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, split in zip(axes, ("dev", "untouched")):
        for k, b in enumerate(BASELINES):
            lead = summary[split]["lead"][b]
            ax.bar(k, lead["mean"], yerr=[[lead["mean"] - lead["low"]], [lead["high"] - lead["mean"]]],
                   color="#2b6cb0", alpha=0.5, capsize=4)
            ax.scatter(np.full(len(runs), k), lead["values"], color="black", s=12, zorder=3)
        ax.axhline(MARGIN, color="#dd8452", linestyle="--", label=f"goal +{MARGIN}")
        ax.axhline(0, color="#999999", linewidth=0.8)
        ax.set_xticks(range(len(BASELINES)), [f"− {NAMES[b]}" for b in BASELINES], fontsize=8)
        ax.set_title(f"{split}: student − baseline, {len(runs)} seeds")
        ax.set_ylabel("macro-F1 difference")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="students_vs_baselines.py result files (.json)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "students_seeds")
    args = parser.parse_args()
    runs = [read_run(path) for path in args.results]
    if len({r["seed"] for r in runs}) != len(runs):
        raise SystemExit("two result files have the same seed")
    summary = summarise(runs)
    write_result(args.out.with_suffix(".json"), {"results": [str(p) for p in args.results]},
                 {"runs": runs, "summary": summary})
    args.out.with_suffix(".md").write_text(markdown(runs, summary))
    plot(runs, summary, args.out.with_suffix(".png"))
    print(markdown(runs, summary))


if __name__ == "__main__":
    main()
