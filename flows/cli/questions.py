"""`assay questions ...`: validate, list and publish the schema of question specs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from assay.schemas.loader import QuestionSpecError, load_questions
from assay.schemas.questions import json_schema

questions_app = typer.Typer(help="Write and check question specs (one YAML file per yes/no question).",
                            no_args_is_help=True)
console = Console()


@questions_app.command("validate")
def validate(folder: Path = typer.Argument(..., help="Folder of question YAML files (or one file)."),
             check_env: bool = typer.Option(False, "--check-env", help="Also require LLM API-key variables to be set.")
             ) -> None:
    """Report every problem in a question folder at once, each with file, line, field and a hint."""
    try:
        loaded = load_questions(folder, check_env=check_env)
    except QuestionSpecError as error:
        for problem in error.problems:
            console.print(f"[red]✗[/red] {problem}", highlight=False, soft_wrap=True)
        console.print(f"[red]{len(error.problems)} problem(s)[/red] in {folder}")
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] {len(loaded)} question(s) valid in {folder}")


@questions_app.command("list")
def list_questions(folder: Path = typer.Argument(..., help="Folder of question YAML files.")) -> None:
    """Print a table of the questions in a folder."""
    try:
        loaded = load_questions(folder)
    except QuestionSpecError as error:
        console.print(str(error), highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"Questions in {folder}")
    for column in ("id", "version", "question", "sources", "file"):
        table.add_column(column)
    for item in loaded:
        spec = item.spec
        sources = ", ".join(f"{s.name} ({s.kind})" for s in spec.sources)
        table.add_row(spec.id, str(spec.version), spec.question, sources, item.path.name)
    console.print(table)


@questions_app.command("schema")
def schema(out: Path | None = typer.Option(None, "--out", help="Write to this file instead of stdout.")) -> None:
    """Print the JSON Schema of a question file (for editor validation)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    """Add the `questions` command group to the main CLI."""
    app.add_typer(questions_app, name="questions")
