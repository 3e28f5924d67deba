"""`assay demo`: the whole job on the bundled Jigsaw data, through the same Prefect flows production runs.

label (4,000 seed records of train.parquet: recorded GPT-4 answers, rules, embeddings, plus a live LLM
when one is configured) → train seven adapters → evaluate and promote → score dev.parquet with the
multi-LoRA engine (the monthly-batch flow) → a report comparing, per question, each source, the
combined label and the student with the gold labels, and the student with each recorded teacher on the
dev records that teacher answered. A re-run reuses finished work; ``--fresh`` starts over.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pyarrow as pa

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
console = Console()


# ---- a live teacher on top of the offline sources ----------------------------------------------
def with_teacher(questions: Path, out: Path, base_url: str, model: str, api_key_env: str) -> Path:
    """Copies of the question files with one more source, an OpenAI-compatible ``llm`` teacher."""
    import yaml

    from assay.schemas import load_questions
    from assay.schemas.loader import resolve

    out.mkdir(parents=True, exist_ok=True)
    for loaded in load_questions(questions):
        data = yaml.safe_load(loaded.path.read_text())
        for source in data["sources"]:
            if source["kind"] in ("labels_file", "local_llm"):
                source["path"] = str(resolve(loaded.path, source["path"]))  # the copies live elsewhere
        data["sources"].append({"kind": "llm", "name": "live_llm", "base_url": base_url, "model": model,
                                "api_key_env": api_key_env})
        (out / loaded.path.name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return out


# ---- the comparison with gold -------------------------------------------------------------------
def _truth(gold_path: Path, question_id: str, ids: list[str]):
    import numpy as np

    from assay.labeling.gold import gold_labels

    gold = gold_labels(gold_path, question_id)
    lookup = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
    keep = np.array([lookup.get(i) is not None for i in ids], dtype=bool)
    return keep, np.array([lookup[i] for i, k in zip(ids, keep) if k], dtype=bool)


def read_student_answers(scores: Path) -> pa.Table | None:
    """The students' answers on dev (the batch's Parquet parts), or None when nothing was scored."""
    import pyarrow.parquet as pq

    from assay.flows.report import output_files

    files = output_files(scores)
    return pq.ParquetDataset(files).read() if files else None


def compare_with_gold(run_dir: Path, student: pa.Table | None, pool: Path, dev: Path,
                      question_ids: list[str]) -> dict[str, Any]:
    """Per question: each source (where it voted) and the combined label on the seed records against the
    pool's gold, and the student's answers on dev against dev's gold (F1 of the yes class)."""
    import numpy as np
    import pyarrow.parquet as pq

    from assay.flows.pipeline import labels_dir
    from assay.labeling.metrics import binary_scores

    labels = labels_dir(run_dir)
    rows = {}
    for qid in question_ids:
        votes = pq.read_table(labels / "votes" / f"{qid}.parquet")
        keep, truth = _truth(pool, qid, votes.column("id").to_pylist())
        sources = {}
        for name in (c for c in votes.column_names if c != "id" and "__" not in c):
            vote = votes.column(name).to_numpy()[keep]
            voted = vote >= 0
            sources[name] = {**binary_scores(truth[voted], vote[voted] == 1), "coverage": round(float(voted.mean()), 4),
                             "votes_yes": bool((vote == 1).any())}
        combined = pq.read_table(labels / "labels" / f"{qid}.parquet")
        ckeep, ctruth = _truth(pool, qid, combined.column("id").to_pylist())
        row = {"sources": sources,
               "combined": binary_scores(ctruth, combined.column("label").to_numpy()[ckeep] == 1),
               "student": None}
        if student is not None and qid in student.column_names:
            skeep, struth = _truth(dev, qid, student.column("id").to_pylist())
            row["student"] = binary_scores(struth, np.asarray(student.column(qid).to_pylist(), dtype=bool)[skeep])
        rows[qid] = row
    return rows


def student_vs_recorded_teachers(questions: Path, student: pa.Table | None, dev: Path,
                                 question_ids: list[str]) -> list[dict[str, Any]]:
    """The student against each recorded teacher (a ``labels_file`` source that votes yes and no), on the dev
    records that teacher answered: like for like, F1 of the yes class against dev's gold."""
    import numpy as np

    from assay.labeling.metrics import binary_scores
    from assay.labeling.sources.labels_file import LabelsFileVoter
    from assay.schemas import load_questions
    from assay.schemas.questions import LabelsFileSource

    compared = []
    for loaded in load_questions(questions):
        qid = loaded.spec.id
        if student is None or qid not in question_ids or qid not in student.column_names:
            continue
        keep, truth = _truth(dev, qid, student.column("id").to_pylist())
        ids = [i for i, k in zip(student.column("id").to_pylist(), keep) if k]
        answers = np.asarray(student.column(qid).to_pylist(), dtype=bool)[keep]
        for source in loaded.spec.sources:
            if not isinstance(source, LabelsFileSource) or source.vote != "both":
                continue
            vote = LabelsFileVoter(source, loaded.path).vote(ids, ids).column("vote").to_numpy()
            answered = vote >= 0
            if answered.any():
                compared.append({"question": qid, "teacher": source.name, "records": int(answered.sum()),
                                 "teacher_scores": binary_scores(truth[answered], vote[answered] == 1),
                                 "student_scores": binary_scores(truth[answered], answers[answered])})
    return compared


def plot_f1(rows: dict[str, Any], path: Path) -> None:
    """Grouped bars per question: best source, combined label (seed records), student (dev)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    qids = list(rows)
    series = {
        "best single source (seed)": [max((s["f1"] for s in rows[q]["sources"].values()), default=0) for q in qids],
        "combined label (seed)": [rows[q]["combined"]["f1"] for q in qids],
        "student adapter (dev)": [(rows[q]["student"] or {}).get("f1", 0.0) for q in qids],
    }
    x = np.arange(len(qids))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - 1) * 0.27, values, 0.27, label=name)
    ax.set_xticks(x, qids, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 against gold (yes class)")
    ax.set_title("Assay demo on Jigsaw: sources, combined labels and students")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _source_cell(name: str, scores: dict[str, Any]) -> str:
    """F1 of a source's yes votes, or its accuracy when it only ever votes no; and its coverage."""
    measure = f"F1 {scores['f1']:.3f}" if scores["votes_yes"] else f"accuracy {scores['accuracy']:.3f}"
    return f"{name} {measure} ({scores['coverage']:.0%})"


def markdown(summary: dict[str, Any]) -> str:
    """The demo report for people."""
    fmt = lambda s: "—" if not s else f"{s['f1']:.3f}"  # noqa: E731
    lines = ["# Assay demo report", "",
             f"Seed: {summary['seed_rows']:,} records of `{summary['pool']}` labelled; students scored "
             f"`{summary['dev']}` ({summary['dev_records']:,} records × {len(summary['questions'])} questions"
             + (f", {summary['records_per_second']:,.0f} records/s" if summary["records_per_second"] else
                ", scored by an earlier run") + f"); wall time {summary['seconds']:.0f} s.", "",
             "F1 of the yes class against gold: sources (where they voted; coverage in brackets; accuracy for "
             "sources that only ever vote no) and the combined label on the seed records, the student adapter "
             "on dev.", "",
             "| question | sources | combined (seed) | student (dev) | promotion |", "|---|---|---:|---:|---|"]
    for qid, row in summary["questions"].items():
        sources = ", ".join(_source_cell(name, scores) for name, scores in row["sources"].items())
        lines.append(f"| {qid} | {sources} | {fmt(row['combined'])} | {fmt(row['student'])} | {row['decision']} |")
    if summary.get("teachers"):
        lines += ["", "## The student against its recorded teachers", "",
                  "On the dev records each recorded teacher answered (like for like), F1 of the yes class:", "",
                  "| question | teacher | records | teacher F1 | student F1 |", "|---|---|---:|---:|---:|"]
        lines += [f"| {c['question']} | {c['teacher']} | {c['records']:,} | {c['teacher_scores']['f1']:.3f} | "
                  f"{c['student_scores']['f1']:.3f} |" for c in summary["teachers"]]
    lines += ["", "![F1 by question](f1.png)", "", "## Files", ""]
    lines += [f"- {name}: `{path}`" for name, path in summary["files"].items()]
    return "\n".join(lines) + "\n"


# ---- the flow ------------------------------------------------------------------------------------
def run_demo(questions: Path, data: Path, out: Path, sample: int = 4000) -> dict[str, Any]:
    """The demo as one Prefect flow run of the production flows; writes OUT/report.{md,json} and f1.png."""
    from prefect import flow

    from assay.flows.batch import monthly_batch
    from assay.flows.pipeline import evaluate_and_promote, label, labels_dir, train

    @flow(name="demo")
    def demo_flow() -> dict[str, Any]:
        started = time.perf_counter()
        pool, dev, registry = data / "train.parquet", data / "dev.parquet", out / "registry"
        labelled = label(str(questions), str(pool), str(out), sample=sample)
        trained = train(str(questions), str(out), str(registry))
        decided = evaluate_and_promote(str(questions), str(out), str(registry),
                                       versions={q: t["version"] for q, t in trained.items() if t["version"]})
        batch = monthly_batch(str(registry), str(out / "batch"), input=str(dev), month="dev")
        scores = Path(batch["output"])
        student = read_student_answers(scores)
        rows = compare_with_gold(out, student, pool, dev, list(labelled))
        for qid, row in rows.items():
            decision = decided.get(qid, {})
            row["decision"] = decision.get("reason") or f"not trained: {trained[qid].get('error')}"
            row["current"] = bool(decision.get("current"))
        first = next(iter(labelled.values()))
        summary = {"questions": rows, "teachers": student_vs_recorded_teachers(questions, student, dev, list(labelled)), "seed_rows": first["seed_rows"], "pool": str(pool), "dev": str(dev),
                   "dev_records": batch["records"], "records_per_second": batch["records_per_second"] or 0.0,
                   "seconds": time.perf_counter() - started,
                   "files": {"label run (votes, labels, diagnostics)": str(labels_dir(out)),
                             "label diagnostics": str(labels_dir(out) / "report" / "README.md"),
                             "adapter registry": str(registry), "dev answers (Parquet)": str(scores),
                             "batch report": str(Path(batch["output"]).parent / "report.md"),
                             "this report": str(out / "report.md")}}
        (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_f1(rows, out / "f1.png")
        (out / "report.md").write_text(markdown(summary))
        return summary

    return demo_flow()


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="Assay demo — F1 against gold (yes class)")
    for column in ("question", "best source (seed)", "combined (seed)", "student (dev)", "adapter"):
        table.add_column(column)
    for qid, row in summary["questions"].items():
        name, best = max(row["sources"].items(), key=lambda item: item[1]["f1"])
        student = row["student"]
        table.add_row(qid, f"{best['f1']:.3f} ({name})", f"{row['combined']['f1']:.3f}",
                      "—" if not student else f"{student['f1']:.3f}",
                      "[green]current[/green]" if row["current"] else f"[yellow]{row['decision']}[/yellow]")
    console.print(table)
    for c in summary.get("teachers", []):
        console.print(f"{c['question']} on the {c['records']:,} dev records {c['teacher']} answered: student F1 "
                      f"{c['student_scores']['f1']:.3f}, {c['teacher']} {c['teacher_scores']['f1']:.3f}", highlight=False)
    rate = summary["records_per_second"]
    scored = f"at {rate:,.0f} records/s" if rate else "(already scored by an earlier run)"
    console.print(f"{summary['dev_records']:,} dev records scored {scored}; total {summary['seconds']:.0f} s")
    for name, path in summary["files"].items():
        console.print(f"  {name}: {path}", highlight=False)


def demo(questions: Path = typer.Option(EXAMPLES / "questions" / "jigsaw", help="Question folder."),
         data: Path = typer.Option(EXAMPLES / "data" / "jigsaw", help="Folder with train.parquet and dev.parquet."),
         out: Path = typer.Option(Path("runs/demo"), help="Where the run's files go."),
         sample: int = typer.Option(4000, "--sample", min=50, help="Seed records to label."),
         fresh: bool = typer.Option(False, "--fresh", help="Delete OUT first and redo everything."),
         llm_base_url: str | None = typer.Option(None, "--llm-base-url",
                                                 help="Also ask a live OpenAI-compatible teacher (e.g. http://vllm:8000/v1)."),
         llm_model: str = typer.Option("gpt-4.1-mini", "--llm-model", help="Model name for --llm-base-url."),
         llm_key_env: str = typer.Option("OPENAI_API_KEY", "--llm-key-env",
                                         help="Environment variable holding that endpoint's API key."),
         ) -> None:
    """Label, train seven adapters, score dev.parquet and report F1 against gold, on the bundled data."""
    from assay.schemas import QuestionSpecError

    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if llm_base_url:
            questions = with_teacher(questions, out / "questions", llm_base_url, llm_model, llm_key_env)
        summary = run_demo(questions, data, out, sample=sample)
    except (QuestionSpecError, ValueError) as error:  # e.g. a question the data has no gold column for
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print_summary(summary)


def register(app: typer.Typer) -> None:
    """Add `demo` to the main CLI."""
    app.command("demo")(demo)
