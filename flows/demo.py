"""`assay demo`: the main job end to end on the bundled Jigsaw data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from assay.schemas import QuestionSpecError, RecordReader, load_questions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
console = Console()


def demo(questions: Path = typer.Option(EXAMPLES / "questions" / "jigsaw", help="Question folder."),
         data: Path = typer.Option(EXAMPLES / "data" / "jigsaw", help="Folder with train.parquet and dev.parquet."),
         out: Path = typer.Option(Path("runs/demo"), help="Where the run's files go.")) -> None:
    """Validate the bundled questions, read the bundled records and print a summary."""
    try:
        loaded = load_questions(questions)
    except QuestionSpecError as error:
        console.print(str(error), highlight=False)
        raise typer.Exit(1)
    table = Table(title="Assay demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("questions", ", ".join(q.spec.id for q in loaded))
    for name in ("train", "dev"):
        reader = RecordReader(data / f"{name}.parquet")
        rows = sum(batch.num_rows for batch in reader)
        table.add_row(f"{name} records", f"{rows:,} read, {len(reader.rejects)} rejected")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `demo` to the main CLI."""
    app.command("demo")(demo)
