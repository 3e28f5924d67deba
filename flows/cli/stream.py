"""`assay consume` (Kafka → engine → Parquet, exactly once) and `assay produce` (file → Kafka topic)."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from assay.engine.stream.config import StreamConfig  # the settings alone: no torch, no kafka

if TYPE_CHECKING:  # importing the service loads torch: only when a command runs, not for `assay --help`
    from assay.engine.stream import ConsumeSummary, StreamConfigError

console = Console(stderr=True)
_DEFAULTS = {field.name: field.default for field in fields(StreamConfig)}


def _setting(flag: str, name: str, help: str) -> Any:
    """An optional `consume` setting whose --help shows StreamConfig's default (None: the setting is not given)."""
    return typer.Option(None, flag, help=help, show_default=str(_DEFAULTS[name]))


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
    batch_records: int | None = _setting("--batch-records", "batch_records", "Records per micro-batch (at most)."),
    batch_seconds: float | None = _setting("--batch-seconds", "batch_seconds",
                                           "Cut a micro-batch after this many seconds, even if not full."),
    max_in_flight: int | None = _setting("--max-in-flight", "max_in_flight",
                                         "Micro-batches scored/written at once; beyond, fetching pauses."),
    reload_seconds: float | None = _setting("--reload-seconds", "reload_seconds",
                                            "Check the registry for newly promoted adapters this often."),
    metrics_port: int | None = typer.Option(None, "--metrics-port",
                                            help="Serve Prometheus metrics on this port (/metrics)."),
    log_seconds: float | None = _setting("--log-seconds", "log_seconds", "One status line this often."),
    max_text_chars: int | None = _setting("--max-text-chars", "max_text_chars", "Longer texts go to the dead letters."),
    session_timeout: float | None = _setting("--session-timeout", "session_timeout_s",
                                             "Seconds before the group gives a dead member's partitions away."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Score a Kafka topic's messages into Parquet, exactly once, as a member of a consumer group.

    Settings not given take StreamConfig's defaults (shown below; docs/streaming.md says what each does).
    """
    from kafka.errors import KafkaError

    from assay.engine.adapters import AdapterError
    from assay.engine.scorer import Scorer
    from assay.engine.stream import StreamConfigError
    from assay.engine.stream import consume as run_consume
    from assay.schemas.registry import RegistryError

    given = {"dead_letter": dead_letter, "batch_records": batch_records, "batch_seconds": batch_seconds,
             "max_in_flight": max_in_flight, "reload_seconds": reload_seconds, "metrics_port": metrics_port,
             "log_seconds": log_seconds, "max_text_chars": max_text_chars, "session_timeout_s": session_timeout}
    try:
        config = StreamConfig(bootstrap=bootstrap, topic=topic, group=group, output=output, until_end=until_end,
                              **{name: value for name, value in given.items() if value is not None})
    except StreamConfigError as error:
        raise _usage_error(error) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console,
                        show_path=False, markup=False)])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    wanted = [q.strip() for q in questions.split(",") if q.strip()] if questions else None
    try:
        scorer = Scorer.from_registry(registry, questions=wanted, device=device)
        summary = run_consume(config, scorer)
    except (AdapterError, RegistryError, KafkaError, KeyError, ValueError, OSError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _print_summary(summary)


def _usage_error(error: StreamConfigError) -> typer.BadParameter:
    """A setting out of range as a usage error that names the option (exit status 2, like any bad option)."""
    option = "--session-timeout" if error.field == "session_timeout_s" else "--" + error.field.replace("_", "-")
    return typer.BadParameter(error.problem, param_hint=f"'{option}'")


def _print_summary(summary: ConsumeSummary) -> None:
    """The run's figures as one table on stderr."""
    table = Table(title=f"assay consume {summary.topic} → {summary.output}", show_header=False)
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

    from assay.engine.stream import produce as run_produce
    from assay.schemas.records import RecordsError

    try:
        sent = run_produce(path, bootstrap, topic, key=None if no_key else key)
    except (RecordsError, KafkaError, OSError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] {sent:,} messages sent to {topic}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `consume` and `produce` commands to the main CLI."""
    app.command("consume")(consume)
    app.command("produce")(produce)
