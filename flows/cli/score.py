"""`assay score`: score records from Parquet/JSONL/CSV with every current adapter into Parquet parts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def score(
    registry: Path = typer.Option(..., "--registry", help="Adapter registry folder (<question>/<version>/, CURRENT)."),
    input_path: Path = typer.Option(..., "--input", help="Record file or folder (.parquet, .jsonl, .csv) with id, text."),
    output: Path = typer.Option(..., "--output", help="Output folder for part-NNNNN.parquet; re-run to resume."),
    questions: str | None = typer.Option(None, "--questions", help="Comma-separated question ids (default: all)."),
    batch_tokens: int = typer.Option(16_384, "--batch-tokens", min=1,
                                     help="Padded tokens per batch, counted once per adapter (bounds memory)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    file_rows: int = typer.Option(50_000, "--file-rows", min=1, help="Records per output part file."),
    base: Path | None = typer.Option(None, "--base", help="Base model folder (default: from the adapters' manifests)."),
    max_length: int | None = typer.Option(None, "--max-length", min=1,
                                          help="Token limit (default: the adapters' training length)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="CPU threads for torch (default: one per core); use fewer on a "
                                            "machine shared with other jobs."),
) -> None:
    """Score every record against each question's current adapter: P(yes) and the yes/no answer."""
    import torch

    from assay.engine.adapters import AdapterError
    from assay.engine.run import ResumeError, score_files
    from assay.engine.scorer import Scorer
    from assay.schemas.records import RecordsError

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    wanted = [q.strip() for q in questions.split(",") if q.strip()] if questions else None
    try:
        scorer = Scorer.from_registry(registry, questions=wanted, device=device, batch_tokens=batch_tokens,
                                      base=base, max_length=max_length)
        console.print(f"Loaded base {scorer.base} and {len(scorer.question_ids)} adapter(s): "
                      + ", ".join(f"{q} v{v}" for q, v in scorer.metadata("").adapters.items()), highlight=False)
        summary = score_files(scorer, input_path, output, file_rows=file_rows)
    except (AdapterError, ResumeError, RecordsError, KeyError, ValueError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"assay score → {summary.output}", show_header=False)
    rate = summary.records_per_second
    for name, value in [
        ("run id", summary.run_id),
        ("questions", ", ".join(summary.questions)),
        ("records scored", f"{summary.scored:,}"),
        ("records already done (resumed)", f"{summary.skipped:,}"),
        ("part files", str(summary.parts)),
        ("truncated at max length", f"{summary.truncated:,} (max {scorer.max_length} tokens)"),
        ("rejected rows", f"{summary.rejects:,}" + (" → rejects.parquet" if summary.rejects else "")),
        ("time", f"{summary.seconds:.1f} s"),
        ("records/s", f"{rate:,.1f}"),
        ("records×questions/s", f"{rate * len(summary.questions):,.1f}"),
    ]:
        table.add_row(name, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the `score` command to the main CLI."""
    app.command("score")(score)
