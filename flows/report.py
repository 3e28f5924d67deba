"""The monthly run report: counts, per-question yes rates and their change since last month, throughput, cost.

Written as ``report.json`` (for machines and next month's comparison), ``report.md`` (for people)
and ``yes_rates.png`` (a bar chart of this month's and last month's yes rates).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "yes_rates.png"


def output_files(scores: str | Path) -> list[str]:
    """The answer files of a run: ``part-*.parquet`` (files) or ``<topic>/p<n>/*.parquet`` (Kafka), not the
    rejects or dead letters."""
    from assay.engine.run import REJECTS_FILE
    from assay.engine.stream import DEAD_LETTER_FOLDER

    root = Path(scores)
    return sorted(str(f) for f in root.rglob("*.parquet") if f.name != REJECTS_FILE and not any(
        part == DEAD_LETTER_FOLDER or part.startswith(".") for part in f.relative_to(root).parts))


def yes_rates(scores: str | Path, question_ids: list[str]) -> tuple[int, dict[str, float]]:
    """Records in the output Parquet files and the share answered yes per question."""
    files = output_files(scores)
    table = ds.dataset(files, format="parquet").to_table(columns=question_ids)
    rows = table.num_rows
    rates = {qid: (pc.sum(pc.cast(table[qid], "int64")).as_py() or 0) / rows if rows else 0.0 for qid in question_ids}
    return rows, rates


def previous_month(month: str) -> str:
    """``YYYY-MM`` of the month before ``month``."""
    year, number = (int(part) for part in month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


def build(month: str, scores: str | Path, question_ids: list[str], run: dict[str, Any],
          previous: dict[str, Any] | None) -> dict[str, Any]:
    """The report of one batch run; ``run`` holds source, seconds, scored, rejects, adapters, cost."""
    records, rates = yes_rates(scores, question_ids)
    before = (previous or {}).get("yes_rate", {})
    seconds = float(run.get("seconds") or 0.0)
    return {
        "month": month,
        "records": records,
        "questions": question_ids,
        "yes_rate": rates,
        "yes_rate_previous": {q: before.get(q) for q in question_ids},
        "yes_rate_change": {q: (rates[q] - before[q]) if before.get(q) is not None else None for q in question_ids},
        "records_per_second": (run.get("scored", records) / seconds) if seconds > 0 else None,
        **run,
    }


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.2f} pp" if signed else f"{value * 100:.2f}%"


def markdown(report: dict[str, Any]) -> str:
    """The report for people."""
    lines = [f"# Assay monthly batch — {report['month']}", "",
             f"- source: `{report.get('source')}`",
             f"- output: `{report.get('output')}`",
             f"- records scored: {report.get('scored', 0):,} (in the output: {report['records']:,}; "
             f"rejected: {report.get('rejects', 0):,})",
             f"- time: {report.get('seconds', 0):.1f} s"
             + (f", {report['records_per_second']:,.1f} records/s" if report.get("records_per_second") else ""),
             f"- compute cost: ${report.get('cost_usd', 0.0):,.2f} (at ${report.get('gpu_hour_usd', 0.0)}/h)",
             f"- adapters: {', '.join(f'{q} v{v}' for q, v in report.get('adapters', {}).items())}",
             "", "| question | yes rate | last month | change |", "|---|---:|---:|---:|"]
    for qid in report["questions"]:
        lines.append(f"| {qid} | {_percent(report['yes_rate'][qid])} | {_percent(report['yes_rate_previous'][qid])} "
                     f"| {_percent(report['yes_rate_change'][qid], signed=True)} |")
    lines += ["", f"![yes rates]({REPORT_PNG})", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar chart of the yes rate per question, this month beside last month."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    qids = report["questions"]
    x = np.arange(len(qids))
    now = [report["yes_rate"][q] * 100 for q in qids]
    before = [(report["yes_rate_previous"][q] or 0.0) * 100 for q in qids]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(qids)), 3.6))
    ax.bar(x - 0.2, before, 0.4, label="last month", color="#bbbbbb")
    ax.bar(x + 0.2, now, 0.4, label=report["month"], color="#2b6cb0")
    ax.set_xticks(x, qids, rotation=30, ha="right")
    ax.set_ylabel("yes rate (%)")
    ax.set_title(f"Assay monthly batch {report['month']}: {report['records']:,} records")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], folder: str | Path) -> Path:
    """Write report.json, report.md and yes_rates.png into ``folder``; return the Markdown path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(report, folder / REPORT_PNG)
    (folder / REPORT_MD).write_text(markdown(report))
    return folder / REPORT_MD


def load_previous(root: str | Path, month: str) -> dict[str, Any] | None:
    """Last month's report under ``root/<YYYY-MM>/``, if that run happened (None for a run not named by month)."""
    if not re.fullmatch(r"\d{4}-\d{2}", month):
        return None
    path = Path(root) / previous_month(month) / REPORT_JSON
    return json.loads(path.read_text()) if path.is_file() else None
