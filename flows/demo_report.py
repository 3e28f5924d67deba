"""The demo report for people: one table on the same dev records, the teacher comparison, speed, cost, a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABEL_COLUMNS = ("majority vote", "combined labels")
STUDENT_COLUMNS = ("student", "student + cascade")


def columns(rows: dict[str, Any]) -> list[str]:
    """Method names in reading order: sources, majority vote, combined labels, baselines, student, cascade."""
    seen: list[str] = []
    for row in rows.values():
        seen += [m for m in row["methods"] if m not in seen]
    sources = [m for m in seen if m not in LABEL_COLUMNS + STUDENT_COLUMNS and not m.startswith("baseline")]
    baselines = [m for m in seen if m.startswith("baseline")]
    return [*sources, *[m for m in LABEL_COLUMNS if m in seen], *baselines, *[m for m in STUDENT_COLUMNS if m in seen]]


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _speed_lines(speed: dict[str, Any]) -> list[str]:
    lines = ["| | records/s | USD per 1,000 records (all questions) | how |", "|---|---:|---:|---|"]
    for who in ("teacher", "student"):
        s = speed[who]
        rate = "—" if not s["records_per_second"] else f"{s['records_per_second']:,.0f}"
        lines.append(f"| {who} | {rate} | {_usd(s['usd_per_1000'])} | {s['how']} |")
    return lines


def _cascade_lines(rows: dict[str, Any]) -> list[str]:
    with_cascade = {q: r["cascade"] for q, r in rows.items() if "cascade" in r}
    if not with_cascade:
        return []
    lines = ["", "## Cascade: the least sure records to the recorded teacher", "",
             "| question | teacher | routed | share | teacher answered | answers changed | cost (list price) | "
             "student F1 | with cascade | F1 gained |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q, c in with_cascade.items():
        lines.append(f"| {q} | {c['teacher']} | {c['routed']:,} | {c['share_routed']:.1%} | "
                     f"{c['teacher_answered']:,} | {c['changed']:,} | {_usd(c['cost_usd'])} | {c['student_f1']:.3f} | {c['cascade_f1']:.3f} | "
                     f"{c['f1_gained']:+.3f} |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The demo report."""
    rows = summary["questions"]
    names = columns(rows)
    rate = summary["records_per_second"]
    lines = ["# Assay demo report", "",
             f"Seed: {summary['seed_rows']:,} records of `{summary['pool']}` labelled; students scored "
             f"`{summary['dev']}` ({summary['dev_records']:,} records × {len(rows)} questions"
             + (f", {rate:,.0f} records/s" if rate else ", scored by an earlier run")
             + f"); wall time {summary['seconds']:.0f} s."
             + ("" if summary.get("batch_ran", True) else " No adapter passed the promotion gate, so the monthly "
                "batch (which serves current adapters only) did not run; the table scores the trained versions."),
             "",
             f"F1 of the yes class against gold, **every column on the same {summary['dev_records']:,} dev records**: "
             "each source alone (an abstain counts as no), majority vote of the sources, the combined labels (label "
             "model over the dev records' votes, dev's class balance estimated), baselines trained on the same "
             "seed labels with the student's threshold rule, the student adapter (the version this run trained, "
             "promoted or not), and the student "
             f"with its least sure {summary.get('cascade_share', 0):.0%} of records sent to the recorded teacher.", "",
             "| question | yes | " + " | ".join(names) + " | promotion |", "|---|---:|" + "---:|" * len(names) + "---|"]
    for qid, row in rows.items():
        cells = [f"{row['methods'][m]['f1']:.3f}" if m in row["methods"] else "—" for m in names]
        lines.append(f"| {qid} | {row['positives']} | " + " | ".join(cells) + f" | {row.get('decision', '')} |")
    macro = [sum(r["methods"][m]["f1"] for r in rows.values() if m in r["methods"]) / len(rows)
             if all(m in r["methods"] for r in rows.values()) else None for m in names]
    lines.append("| **macro** | | " + " | ".join("—" if v is None else f"**{v:.3f}**" for v in macro) + " | |")
    teachers = {q: r["teacher"] for q, r in rows.items() if "teacher" in r}
    if teachers:
        lines += ["", "## The student against its recorded teachers", "",
                  "On the dev records each recorded teacher answered (like for like), F1 of the yes class:", "",
                  "| question | teacher | records | teacher F1 | student F1 |", "|---|---|---:|---:|---:|"]
        lines += [f"| {q} | {t['name']} | {t['records']:,} | {t['teacher_scores']['f1']:.3f} | "
                  f"{t['student_scores']['f1']:.3f} |" for q, t in teachers.items()]
    lines += _cascade_lines(rows)
    lines += ["", "## Speed and cost", "", *_speed_lines(summary["speed"])]
    lines += ["", "![F1 by question](f1.png)", "", "## Files", ""]
    lines += [f"- {name}: `{path}`" for name, path in summary["files"].items()]
    return "\n".join(lines) + "\n"


def plot_f1(rows: dict[str, Any], path: Path) -> None:
    """Grouped bars per question, every method of the table on the same dev records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    qids, names = list(rows), columns(rows)
    width = 0.85 / max(len(names), 1)
    x = np.arange(len(qids))
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for k, name in enumerate(names):
        values = [rows[q]["methods"].get(name, {}).get("f1", 0.0) for q in qids]
        bold = name in STUDENT_COLUMNS
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name,
               edgecolor="black" if bold else None, linewidth=1.2 if bold else 0)
    ax.set_xticks(x, qids, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 against dev gold (yes class)")
    ax.set_title("Assay demo: every method on the same dev records")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
