"""`assay onboard`, `assay monthly`, `assay watch-questions`: the flows from the command line.

Each command runs the same Prefect flow a deployment runs (with ``PREFECT_API_URL`` set, against
that server; without it, Prefect starts a temporary local one).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fail(error: Exception) -> None:
    console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def onboard(question_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The question's YAML file."),
            records: Path = typer.Option(..., "--records", exists=True, help="Unlabelled records to sample the seed set from."),
            registry: Path = typer.Option(..., "--registry", help="Adapter registry folder."),
            run_dir: Path = typer.Option(Path("runs/onboarding"), "--run-dir", help="Where labels and stamps go."),
            gold: Path | None = typer.Option(None, "--gold", exists=True, help="Optional gold labels to evaluate on."),
            sample: int = typer.Option(4000, "--sample", min=1, help="Seed records to label."),
            budget_usd: float | None = typer.Option(None, "--budget-usd", min=0, help="LLM spend limit."),
            fresh: bool = typer.Option(False, "--fresh", help="Redo every step, even when its inputs are unchanged."),
            ) -> None:
    """Label, train, evaluate and (if it passes) promote ONE question; running consumers pick it up."""
    from assay.flows.pipeline import onboard_question
    from assay.schemas import QuestionSpecError

    try:
        result = onboard_question(str(question_file), str(records), str(registry), str(run_dir),
                                  gold=str(gold) if gold else None, sample=sample, budget_usd=budget_usd, fresh=fresh)
    except (QuestionSpecError, ValueError, FileNotFoundError) as error:
        _fail(error)
    decision, version = result["decision"], result["train"]["version"]
    if version is None:
        _fail(ValueError(f"{result['question_id']}: {decision['reason']}"))
    mark = "[green]✓ current[/green]" if decision["current"] else "[yellow]not promoted[/yellow]"
    console.print(f"{result['question_id']} v{version}: {mark} — {decision['reason']}", highlight=False)


def monthly(registry: Path = typer.Option(..., "--registry", help="Adapter registry folder."),
            out: Path = typer.Option(..., "--out", help="Root folder; the run goes to OUT/<YYYY-MM>/."),
            input_path: Path | None = typer.Option(None, "--input", exists=True, help="Records folder or file."),
            bootstrap: str | None = typer.Option(None, "--bootstrap", help="Kafka brokers host:port (with --topic)."),
            topic: str | None = typer.Option(None, "--topic", help="Kafka topic, read up to its current end."),
            group: str = typer.Option("assay-monthly", "--group", help="Kafka consumer group."),
            month: str | None = typer.Option(None, "--month", help="YYYY-MM (default: this month, UTC)."),
            device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
            gpu_hour_usd: float = typer.Option(0.0, "--gpu-hour-usd", min=0, help="Compute price for the report."),
            ) -> None:
    """Score a month's snapshot (--input, or --bootstrap + --topic) and write its report."""
    from assay.flows.batch import monthly_batch

    try:
        report = monthly_batch(str(registry), str(out), input=str(input_path) if input_path else None,
                               bootstrap=bootstrap, topic=topic, group=group, month=month, device=device,
                               gpu_hour_usd=gpu_hour_usd)
    except (ValueError, KeyError, FileNotFoundError) as error:
        _fail(error)
    table = Table(title=f"monthly batch {report['month']}: {report['records']:,} records → {out / report['month']}")
    for column in ("question", "yes rate", "change since last month"):
        table.add_column(column)
    for qid in report["questions"]:
        change = report["yes_rate_change"][qid]
        table.add_row(qid, f"{report['yes_rate'][qid]:.2%}", "—" if change is None else f"{change * 100:+.2f} pp")
    console.print(table)


def watch_questions(folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Question folder."),
                    registry: Path = typer.Option(..., "--registry", help="Adapter registry folder."),
                    interval: float = typer.Option(30.0, "--interval", min=1, help="Seconds between scans."),
                    once: bool = typer.Option(False, "--once", help="Scan once and exit."),
                    state: Path | None = typer.Option(None, "--state", help="State file (default: FOLDER/.assay-watch.json)."),
                    ) -> None:
    """Emit assay.question.added/changed for new or edited question files (triggers onboarding)."""
    from assay.flows.watch import announce

    reported: set[str] = set()
    while True:
        fresh, problems = announce(folder, registry, state)
        for problem in sorted(set(problems) - reported):
            console.print(f"[red]✗[/red] {problem}", highlight=False, soft_wrap=True)
        reported = set(problems)
        for change in fresh:
            console.print(f"→ {change.question_id}: {change.kind} (spec v{change.spec_version}, {change.path})",
                          highlight=False)
        if once:
            return
        time.sleep(interval)


def register(app: typer.Typer) -> None:
    """Add `onboard`, `monthly` and `watch-questions` to the main CLI."""
    app.command("onboard")(onboard)
    app.command("monthly")(monthly)
    app.command("watch-questions")(watch_questions)
