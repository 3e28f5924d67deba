"""`assay label` (seed set -> votes -> labels, with a report) and `assay combine` (votes -> labels)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from assay.labeling.model.combine import METHODS, combine
from assay.schemas import QuestionSpecError, RecordsError, load_questions, select, write_parquet_atomic

console = Console()


def label(questions: Path = typer.Option(..., "--questions", help="Folder of question YAML files."),
          input: Path = typer.Option(..., "--input", help="Records (Parquet/JSONL/CSV file or folder) with id, text."),
          out: Path = typer.Option(..., "--out", help="Run folder to write (re-runs reuse finished work)."),
          sample: int = typer.Option(4000, "--sample", min=0, help="Seed records to sample; 0 for all."),
          seed: int = typer.Option(0, "--seed", help="Random seed of the sample."),
          only: str | None = typer.Option(None, "--only", help="Comma-separated question ids (default: all)."),
          stratify: bool = typer.Option(False, "--stratify", help="Draw up to half the seed set from records "
                                        "where rules and label files disagree."),
          gold: Path | None = typer.Option(None, "--gold", help="Gold labels (id + a column per question or "
                                           "`label`): choose the combiner by them and report measured quality."),
          budget_usd: float | None = typer.Option(None, "--budget-usd", min=0.0, help="Cap on LLM spend."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")) -> None:
    """Sample a seed set, run every question's sources, combine the votes and write a run folder."""
    from assay.labeling.pipeline import label_questions

    try:
        loaded = select(load_questions(questions), only)
        summary = label_questions(loaded, input, out, sample=sample or None, seed=seed, stratify=stratify,
                                  gold_path=gold, budget_usd=budget_usd, progress=not quiet)
    except (QuestionSpecError, RecordsError, ValueError, RuntimeError) as error:  # RuntimeError: a teacher
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"Labelled {summary.seed_rows:,} records in {summary.seconds:.1f}s → {out}")
    for column in ("question", "method", "est. P(yes)", "threshold", "labelled yes", "gold F1", "majority F1"):
        table.add_column(column, justify="left" if column in ("question", "method") else "right")
    sources = Table(title="Sources")
    for column in ("question", "source", "coverage", "est. accuracy", "gold F1 alone"):
        sources.add_column(column, justify="left" if column in ("question", "source") else "right")
    for qid, q in summary.questions.items():
        f1 = lambda key: f"{q.gold[key]['f1']:.3f}" if key in q.gold else "—"  # noqa: E731
        table.add_row(qid, q.method, f"{q.prior:.3f}", f"{q.threshold:.3f}", f"{q.yes_rate:.3f}", f1("combined"),
                      f1("majority"))
        for name, coverage in q.coverage.items():
            sources.add_row(qid, name, f"{coverage:.3f}", f"{q.source_accuracy[name]:.3f}", f1(f"source:{name}"))
    console.print(sources)
    console.print(table)
    if summary.rejected_rows:
        console.print(f"[yellow]{summary.rejected_rows} input rows rejected[/yellow]: see {out / 'rejects.parquet'}")
    console.print(f"report: {out / 'report' / 'README.md'}")


def combine_command(votes: Path = typer.Argument(..., help="Votes Parquet: id + one int8 column per source."),
                    out: Path = typer.Option(..., "--out", help="Where to write id, p_yes, label."),
                    method: str = typer.Option("auto", "--method", help=f"One of: {', '.join(METHODS)}."),
                    gold: Path | None = typer.Option(None, "--gold", help="Gold Parquet/CSV (id + `label` or a "
                                                     "column named --question): `auto` picks the best method on it."),
                    question: str | None = typer.Option(None, "--question", help="Gold column to use (default: "
                                                        "the votes file's name)."),
                    class_balance: float | None = typer.Option(None, "--class-balance", min=0.0, max=1.0,
                                                               help="Known share of yes: replaces the label "
                                                               "model's estimate for every method."),
                    ) -> None:
    """Combine one question's votes into probabilistic labels and say which method was used and why."""
    from assay.labeling.gold import gold_labels

    try:
        table = pq.read_table(votes)
        gold_table = gold_labels(gold, question or votes.stem) if gold else None
        result = combine(table, method=method, gold=gold_table, class_balance=class_balance)
    except (OSError, ValueError) as error:
        console.print(f"[red]error:[/red] {votes}: {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    write_parquet_atomic(result.probs, out)
    labels = result.probs.column("label").to_numpy()
    console.print(f"{result.probs.num_rows:,} records → {out}: method [bold]{result.method}[/bold] ({result.reason}); "
                  f"estimated P(yes) {result.prior:.3f}, threshold {result.threshold:.3f}, "
                  f"labelled yes {labels.mean() if len(labels) else 0:.3f}", highlight=False)
    table = Table()
    for column in ("source", "coverage", "estimated accuracy"):
        table.add_column(column)
    for name, accuracy in result.source_accuracy.items():
        table.add_row(name, f"{result.coverage[name]:.3f}", f"{accuracy:.3f}")
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `label` and `combine` to the main CLI."""
    app.command("label")(label)
    app.command("combine")(combine_command)
