"""`assay consume` (Kafka → engine → Parquet, exactly once) and `assay produce` (file → Kafka topic)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

console = Console(stderr=True)


def consume(
    registry: Path = typer.Option(..., "--registry", help="Adapter registry folder (<question>/<version>/, CURRENT)."),
    bootstrap: str = typer.Option(..., "--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]."),
    topic: str = typer.Option(..., "--topic", help="Topic of JSON messages {\"id\": ..., \"text\": ..., ...}."),
    group: str = typer.Option(..., "--group", help="Consumer group; more processes in one group share partitions."),
    output: Path = typer.Option(..., "--output", help="Output folder: <topic>/p<partition>/<start>-<end>.parquet."),
    until_end: bool = typer.Option(False, "--until-end", help="Stop once the end offsets taken at start are done."),
    dead_letter: str | None = typer.Option(None, "--dead-letter",
                                           help="Folder for bad messages (default OUTPUT/_dead_letters), "
                                                "or kafka:TOPIC."),
    questions: str | None = typer.Option(None, "--questions", help="Comma-separated question ids (default: all)."),
    batch_records: int = typer.Option(2_000, "--batch-records", min=1, help="Records per micro-batch (at most)."),
    batch_seconds: float = typer.Option(2.0, "--batch-seconds", min=0.01,
                                        help="Cut a micro-batch after this many seconds, even if not full."),
    max_in_flight: int = typer.Option(2, "--max-in-flight", min=1,
                                      help="Micro-batches scored/written at once; beyond, fetching pauses."),
    reload_seconds: float = typer.Option(60.0, "--reload-seconds", min=0.0,
                                         help="Check the registry for newly promoted adapters this often."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", min=1, max=65535,
                                            help="Serve Prometheus metrics on this port (/metrics)."),
    log_seconds: float = typer.Option(15.0, "--log-seconds", min=0.1, help="One status line this often."),
    max_text_chars: int = typer.Option(100_000, "--max-text-chars", min=1,
                                       help="Longer texts go to the dead letters."),
    session_timeout: float = typer.Option(10.0, "--session-timeout", min=1.0,
                                          help="Seconds before the group gives a dead member's partitions away."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Score a Kafka topic's messages into Parquet, exactly once, as a member of a consumer group."""
    from kafka.errors import KafkaError

    from assay.schemas.registry import RegistryError

    from assay.engine.adapters import AdapterError
    from assay.engine.stream import consume as run_consume

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console,
                        show_path=False, markup=False)])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    wanted = [q.strip() for q in questions.split(",") if q.strip()] if questions else None
    try:
        summary = run_consume(registry, bootstrap, topic, group, output, until_end=until_end,
                              dead_letter=dead_letter, questions=wanted, batch_records=batch_records,
                              batch_seconds=batch_seconds, max_in_flight=max_in_flight, reload_seconds=reload_seconds,
                              metrics_port=metrics_port, log_seconds=log_seconds, max_text_chars=max_text_chars,
                              session_timeout_s=session_timeout, device=device)
    except (AdapterError, RegistryError, KafkaError, KeyError, ValueError, OSError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    table = Table(title=f"assay consume {topic} → {summary.output}", show_header=False)
    for name, value in [
        ("group / run id", f"{summary.group} / {summary.run_id}"),
        ("stopped by", summary.stopped_by),
        ("records scored", f"{summary.records:,}"),
        ("dead letters", f"{summary.dead_letters:,}"),
        ("files written", f"{summary.files:,} in {summary.batches:,} micro-batches"),
        ("time", f"{summary.seconds:.1f} s ({summary.startup_seconds:.1f} s to join the group and get messages)"),
        ("records/s", f"{summary.records_per_second:,.1f}"),
    ]:
        table.add_row(name, value)
    console.print(table)


def produce(
    path: Path = typer.Argument(..., help="Record file or folder (.parquet, .jsonl, .csv) with id, text."),
    bootstrap: str = typer.Option(..., "--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]."),
    topic: str = typer.Option(..., "--topic", help="Topic to send the records to (one JSON message each)."),
    key: str = typer.Option("id", "--key", help="Field used as the message key (same key, same partition)."),
    no_key: bool = typer.Option(False, "--no-key", help="Send without keys (round-robin over partitions)."),
) -> None:
    """Load records into a Kafka topic, for trials, tests and replays."""
    from kafka.errors import KafkaError

    from assay.schemas.records import RecordsError

    from assay.engine.stream import produce as run_produce

    try:
        sent = run_produce(path, bootstrap, topic, key=None if no_key else key)
    except (RecordsError, KafkaError, OSError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]✓[/green] {sent:,} messages sent to {topic}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `consume` and `produce` commands to the main CLI."""
    app.command("consume")(consume)
    app.command("produce")(produce)
