"""`assay demo`: label, train, score and report on the bundled Jigsaw data (assay.flows.demo)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from assay.flows.demo import CASCADE_SHARE, EXAMPLES

console = Console()
NOT_SOURCES = ("majority vote", "combined labels", "student", "student + cascade")


def _best(found: dict[str, Any]) -> str:
    """The highest F1 among ``found`` (method -> scores), or a dash."""
    return "—" if not found else f"{max(v['f1'] for v in found.values()):.3f}"


def print_summary(summary: dict[str, Any]) -> None:
    """The demo's table on the terminal: per question the best source, combined labels, best baseline, student."""
    table = Table(title=f"Assay demo — F1 against gold on the same {summary['dev_records']:,} dev records")
    for column in ("question", "best source", "combined", "best baseline", "student", "+ cascade", "adapter"):
        table.add_column(column)
    for qid, row in summary["questions"].items():
        methods = row["methods"]
        sources = {m: v for m, v in methods.items() if m not in NOT_SOURCES and not m.startswith("baseline")}
        baselines = {m: v for m, v in methods.items() if m.startswith("baseline")}
        table.add_row(qid, _best(sources), _best({"c": methods["combined labels"]}), _best(baselines),
                      _best({k: methods[k] for k in ("student",) if k in methods}),
                      _best({k: methods[k] for k in ("student + cascade",) if k in methods}),
                      "[green]current[/green]" if row["current"] else f"[yellow]{row['decision']}[/yellow]")
    console.print(table)
    for qid, row in summary["questions"].items():
        if "teacher" in row:
            t = row["teacher"]
            console.print(f"{qid} on the {t['records']:,} dev records {t['name']} answered: student F1 "
                          f"{t['student_scores']['f1']:.3f}, {t['name']} {t['teacher_scores']['f1']:.3f}",
                          highlight=False)
    rate = summary["records_per_second"]
    scored = f"at {rate:,.0f} records/s" if rate else "(already scored by an earlier run)"
    console.print(f"{summary['dev_records']:,} dev records scored {scored}; total {summary['seconds']:.0f} s")
    for name, path in summary["files"].items():
        console.print(f"  {name}: {path}", highlight=False)


def demo(questions: Path = typer.Option(EXAMPLES / "questions" / "jigsaw", help="Question folder."),
         data: Path = typer.Option(EXAMPLES / "data" / "jigsaw", help="Folder with train.parquet and dev.parquet."),
         out: Path = typer.Option(Path("runs/demo"), help="Where the run's files go."),
         sample: int = typer.Option(4000, "--sample", min=50, help="Seed records to label."),
         cascade_share: float = typer.Option(CASCADE_SHARE, "--cascade-share", min=0.0, max=1.0,
                                             help="Share of dev records the student is least sure about that go "
                                                  "to the recorded teacher (0: no cascade)."),
         cascade_budget_usd: float | None = typer.Option(None, "--cascade-budget-usd", min=0.0,
                                                         help="Cap on the cascade's teacher cost (list price)."),
         fresh: bool = typer.Option(False, "--fresh", help="Delete OUT first and redo everything."),
         llm_base_url: str | None = typer.Option(None, "--llm-base-url",
                                                 help="Also ask a live OpenAI-compatible teacher (e.g. http://vllm:8000/v1)."),
         llm_model: str = typer.Option("gpt-4.1-mini", "--llm-model", help="Model name for --llm-base-url."),
         llm_key_env: str = typer.Option("OPENAI_API_KEY", "--llm-key-env",
                                         help="Environment variable holding that endpoint's API key."),
         ) -> None:
    """Label, train seven adapters, score dev.parquet and report F1 against gold, on the bundled data."""
    from assay.flows.demo import DemoDataError, check_inputs, run_demo, with_teacher
    from assay.schemas import QuestionSpecError

    try:
        check_inputs(questions, data)
    except DemoDataError as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if llm_base_url:
            questions = with_teacher(questions, out / "questions", llm_base_url, llm_model, llm_key_env)
        summary = run_demo(questions, data, out, sample=sample, cascade_share=cascade_share,
                           cascade_budget_usd=cascade_budget_usd)
    except (QuestionSpecError, ValueError) as error:  # e.g. a question the data has no gold column for
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    print_summary(summary)


def register(app: typer.Typer) -> None:
    """Add `demo` to the main CLI."""
    app.command("demo")(demo)
