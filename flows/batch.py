"""The ``monthly-batch`` flow: snapshot a source, score every record for every question, write a report.

The source is a folder (or file) of records, scored with ``assay.engine.run.score_files``, or a Kafka
topic read up to its end offsets at the start of the run with ``assay.engine.stream.consume``.
Output: ``OUT/<YYYY-MM>/scores/part-*.parquet`` and ``OUT/<YYYY-MM>/report.{json,md}`` + ``yes_rates.png``.
A re-run of the same month resumes the scoring (the engine's resumable part files) and rewrites the report.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from assay.flows import events, report


def this_month() -> str:
    """The current month as ``YYYY-MM`` (UTC)."""
    return datetime.now(UTC).strftime("%Y-%m")


@task(name="score-snapshot", retries=2, retry_delay_seconds=60)
def score_snapshot(registry: str, scores: str, input: str | None = None, bootstrap: str | None = None,
                   topic: str | None = None, group: str = "assay-monthly", device: str = "cpu",
                   batch_tokens: int = 16_384) -> dict[str, Any]:
    """Score the snapshot into ``scores``; a retry resumes where the failed attempt stopped."""
    from assay.engine.scorer import Scorer

    logger = get_run_logger()
    scorer = Scorer.from_registry(registry, device=device, batch_tokens=batch_tokens)
    adapters = scorer.metadata("").adapters
    logger.info("loaded %d adapter(s): %s", len(adapters), ", ".join(f"{q} v{v}" for q, v in adapters.items()))
    started = time.perf_counter()
    if input:
        from assay.engine.run import score_files

        summary = score_files(scorer, input, scores, show_progress=False)
        done = {"source": str(input), "scored": summary.scored, "resumed": summary.skipped,
                "rejects": summary.rejects, "run_id": summary.run_id}
    else:
        from assay.engine.stream import StreamConfig, consume

        summary = consume(StreamConfig(bootstrap=bootstrap, topic=topic, group=group, output=scores, until_end=True),
                          scorer)
        done = {"source": f"kafka://{bootstrap}/{topic}", "scored": summary.records, "resumed": 0,
                "rejects": summary.dead_letters, "run_id": summary.run_id}
    done.update(seconds=time.perf_counter() - started, adapters=adapters, questions=scorer.question_ids,
                output=str(scores))
    logger.info("scored %s records in %.1f s", f"{done['scored']:,}", done["seconds"])
    return done


@task(name="write-report")
def write_report(out: str, month: str, run: dict[str, Any], gpu_hour_usd: float) -> dict[str, Any]:
    """Build the month's report (with last month's for comparison) and write it beside the scores."""
    run = {**run, "gpu_hour_usd": gpu_hour_usd, "cost_usd": run["seconds"] / 3600 * gpu_hour_usd}
    built = report.build(month, run["output"], run["questions"], run, report.load_previous(out, month))
    path = report.write(built, Path(out) / month)
    get_run_logger().info("report: %s", path)
    return built


@flow(name="monthly-batch")
def monthly_batch(registry: str, out: str, input: str | None = None, bootstrap: str | None = None,
                  topic: str | None = None, group: str = "assay-monthly", month: str | None = None,
                  device: str = "cpu", batch_tokens: int = 16_384, gpu_hour_usd: float = 0.0) -> dict[str, Any]:
    """Score this month's snapshot (``input`` folder, or Kafka ``bootstrap`` + ``topic``) and report on it.

    ``month`` (default: this month, ``YYYY-MM``) names the run's folder; last month's report is compared
    with when both are ``YYYY-MM``.
    """
    if bool(input) == bool(topic):
        raise ValueError("give exactly one source: input (a folder or file of records) or bootstrap + topic (Kafka)")
    if topic and not bootstrap:
        raise ValueError("a Kafka source needs bootstrap (host:port of the brokers) as well as topic")
    month = month or this_month()
    scores = str(Path(out) / month / "scores")
    run = score_snapshot(registry, scores, input=input, bootstrap=bootstrap, topic=topic, group=group,
                         device=device, batch_tokens=batch_tokens)
    built = write_report(out, month, run, gpu_hour_usd)
    events.emit(events.BATCH_FINISHED, f"assay.batch.{month}",
                {"month": month, "records": built["records"], "output": scores, "yes_rate": built["yes_rate"],
                 "report": str(Path(out) / month / report.REPORT_MD)}, name=f"monthly batch {month}")
    return built
