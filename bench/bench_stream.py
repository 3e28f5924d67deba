"""Benchmark the Kafka streaming path against the engine alone on the same records.

The bundled MiniLM base with 7 real PEFT adapters (one per Jigsaw question, random non-zero weights,
or the current adapters of ``--registry``) scores ``--records`` Jigsaw comments:

* engine alone: ``Scorer.score_table`` on the whole table (no Kafka, no files), and on micro-batches
  of ``--batch-records`` (the cut the consumer makes);
* streaming: the records are produced to a fresh 3-partition topic of a real broker, then
  ``assay.engine.stream.consume(..., until_end=True)`` reads, scores and writes them to Parquet and
  commits. Its throughput is counted from the first message to the last commit (the group join
  before it is reported apart), and end to end.

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_stream.py
    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_stream.py --records 1000 --threads 1 --batch-records 500

Starts its own broker (infra/kafka) unless ``--bootstrap`` is given. Writes a table, a JSON file and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-broker handle and the PEFT adapter builders of the tests

from bench_engine import QUESTIONS, RECORDS, build_registry  # noqa: E402
from engine_fixtures import minilm  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from kafka_broker import KafkaBroker  # noqa: E402

from assay.engine.scorer import Scorer  # noqa: E402
from assay.engine.stream import StreamConfig, consume, produce  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

console = Console()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--registry", type=Path, default=None, help="use this registry's current adapters")
    p.add_argument("--bootstrap", default=None, help="an existing broker (default: start one)")
    p.add_argument("--batch-records", type=int, default=1000)
    p.add_argument("--batch-seconds", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3, help="runs of each path, interleaved; medians are reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream",
                   help="writes OUT.json and OUT.png")
    return p.parse_args()


def engine_run(scorer: Scorer, records: pa.Table, batch_records: int) -> tuple[float, float]:
    """Seconds to score all records in one call, and in micro-batches of ``batch_records``."""
    start = time.perf_counter()
    scorer.score_table(records, run_id="bench")
    whole = time.perf_counter() - start
    start = time.perf_counter()
    for offset in range(0, records.num_rows, batch_records):
        scorer.score_table(records.slice(offset, batch_records), run_id="bench")
    return whole, time.perf_counter() - start


def stream_run(scorer: Scorer, bootstrap: str, records_path: Path, n: int, args: argparse.Namespace,
               work: Path) -> dict:
    """Produce the records to a new topic, consume them to Parquet; check every record came out once."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()
    start = time.perf_counter()
    sent = produce(records_path, bootstrap, topic, progress=False)
    produce_s = time.perf_counter() - start
    output = work / topic
    summary = consume(StreamConfig(bootstrap, topic, f"bench-{topic}", output, until_end=True,
                                   batch_records=args.batch_records, batch_seconds=args.batch_seconds,
                                   log_seconds=5), scorer)
    ids = pa.concat_tables(pq.read_table(f, columns=["id"]) for f in (output / topic).glob("p*/*.parquet"))
    assert sent == n and summary.records == n and len(set(ids.column("id").to_pylist())) == n == ids.num_rows
    return {"produce_s": produce_s, "consume_s": summary.seconds, "startup_s": summary.startup_seconds,
            "streaming_s": summary.seconds - summary.startup_seconds, "files": summary.files,
            "batches": summary.batches}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["engine, one call", f"engine, batches of {results['batch_records']}", "Kafka → engine → Parquet",
             "… incl. group join"]
    values = [results["engine_rps"], results["engine_batched_rps"], results["stream_rps"], results["end_to_end_rps"]]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names[::-1], values[::-1], color=["#999999", "#4c72b0", "#dd8452", "#dd8452"][::-1])
    for y, value in enumerate(values[::-1]):
        ax.text(value, y, f" {value:,.0f}", va="center")
    ax.set_xlabel("records/s (7 questions each)")
    ax.set_title(f"Streaming vs engine: {results['records']:,} records, MiniLM + 7 adapters, {results['machine']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    records = pq.read_table(RECORDS, columns=["id", "text"]).slice(0, args.records)
    broker = None if args.bootstrap else KafkaBroker.start()
    bootstrap = args.bootstrap or broker.bootstrap
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            registry = Registry(args.registry) if args.registry else build_registry(work, minilm(), "top2", 8, 128)
            scorer = Scorer.from_registry(registry, device=args.device)
            console.print(f"{len(scorer.question_ids)} adapters: {', '.join(scorer.question_ids)}; "
                          f"{records.num_rows:,} records; torch threads {torch.get_num_threads()}")
            records_path = work / "records.parquet"
            pq.write_table(records, records_path)
            scorer.score_table(records.slice(0, 64))  # warm-up
            whole, batched, streams = [], [], []
            for repeat in range(args.repeats):  # interleaved, so a change in the machine's load hits both paths
                engine_s, batched_s = engine_run(scorer, records, args.batch_records)
                whole.append(engine_s)
                batched.append(batched_s)
                streams.append(stream_run(scorer, bootstrap, records_path, records.num_rows, args, work))
                console.print(f"run {repeat + 1}/{args.repeats}: engine {engine_s:.1f} s (batched {batched_s:.1f} s), "
                              f"stream {streams[-1]['streaming_s']:.1f} s + {streams[-1]['startup_s']:.1f} s join")
    finally:
        if broker is not None:
            broker.stop()
    n = records.num_rows
    median = statistics.median
    results = {
        "records": n, "questions": len(QUESTIONS), "batch_records": args.batch_records, "repeats": args.repeats,
        "machine": f"{os.cpu_count()}-core CPU" if args.device == "cpu" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "engine_s": whole, "engine_batched_s": batched, "stream": streams,
        "engine_rps": n / median(whole), "engine_batched_rps": n / median(batched),
        "stream_rps": n / median(s["streaming_s"] for s in streams),
        "end_to_end_rps": n / median(s["consume_s"] for s in streams),
        "produce_rps": n / median(s["produce_s"] for s in streams),
    }
    results["stream_vs_engine"] = results["stream_rps"] / results["engine_rps"]
    results["stream_vs_engine_batched"] = results["stream_rps"] / results["engine_batched_rps"]
    table = Table(title=f"Streaming vs engine, {n:,} records x {len(QUESTIONS)} questions (median of {args.repeats})")
    for column in ("path", "records/s", "vs engine"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, key in [("engine, one call (score_table)", "engine_rps"),
                      (f"engine, micro-batches of {args.batch_records}", "engine_batched_rps"),
                      ("Kafka → engine → Parquet (first message → last commit)", "stream_rps"),
                      ("… end to end incl. joining the group", "end_to_end_rps"),
                      ("assay produce (file → topic)", "produce_rps")]:
        table.add_row(name, f"{results[key]:,.1f}", f"{results[key] / results['engine_rps']:.1%}")
    console.print(table)
    console.print(f"group join / first message: {median(s['startup_s'] for s in streams):.2f} s; "
                  f"files per run: {streams[0]['files']}, micro-batches: {streams[0]['batches']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
