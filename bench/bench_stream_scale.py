"""A month at scale: a million records through the real broker into Parquet, with flat memory.

A tiny random-weight Llama-shaped base (2 layers, hidden 64) with 3 PEFT adapters keeps the model cheap,
so what is measured is the I/O path: ``assay produce`` into a fresh topic of a real broker, then one
``assay consume --until-end`` process (the CLI, as an operator runs it) reading, scoring, writing and
committing every record. While it runs, its resident memory (``/proc/PID/status``) is sampled every
second against the records already in the output (counted from the segment file names, which carry the
offset ranges), to show that memory stays flat as the count grows. At the end every output file is
checked: the rows add up to the records produced, every id once, no file over ``--batch-records`` rows
(a file holds one partition's share of one micro-batch, so that is where files roll over).

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_stream_scale.py --records 1000000

Starts its own broker (infra/kafka). Writes a table, a JSON file and a PNG (memory against records).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-broker handle and the PEFT adapter builders of the tests

from engine_fixtures import WORDS, make_adapter, make_llama_base, publish  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from kafka_broker import KafkaBroker  # noqa: E402

from assay.engine.stream import produce  # noqa: E402
from assay.engine.stream.files import segments  # noqa: E402

console = Console()
QUESTIONS = ("toxic", "insult", "threat")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--batch-records", type=int, default=5_000, help="assay consume --batch-records")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream_scale",
                   help="output prefix (.json and .png are written)")
    return p.parse_args()


def build_registry(root: Path) -> Path:
    """Three random PEFT adapters of rank 4 on a 2-layer random Llama base, promoted in a real registry."""
    base = make_llama_base(root / "base", layers=2)
    for seed, qid in enumerate(QUESTIONS):
        adapter = make_adapter(base, root / "adapters" / qid, 20 + seed, 4, ["q_proj", "v_proj"], head="score")
        publish(root / "registry", qid, 1, adapter, base, max_length=64)
    return root / "registry"


def write_records(path: Path, n: int, chunk: int = 100_000) -> None:
    """``n`` records of 1 to 40 random words, written in row groups so memory stays small."""
    rng = random.Random(0)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, chunk):
            rows = range(start, min(n, start + chunk))
            writer.write_table(pa.table({"id": [f"m{i:07d}" for i in rows],
                                         "text": [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in rows]},
                                        schema=schema))


def rss_mib(pid: int) -> float | None:
    """Resident memory of a live process in MiB (``None`` once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def records_written(output: Path, topic: str) -> int:
    """Records in the output so far, from the offset ranges in the segment file names."""
    folder = output / topic
    if not folder.is_dir():
        return 0
    return sum(end - start for part in folder.iterdir() for start, end, _ in segments(part))


def consume_and_sample(registry: Path, bootstrap: str, topic: str, output: Path, args: argparse.Namespace,
                       log: Path) -> tuple[float, list[tuple[float, int, float]]]:
    """Run ``assay consume --until-end`` to the end; returns its wall time and (seconds, records, RSS MiB) samples."""
    command = [str(Path(sys.executable).with_name("assay")), "consume", "--registry", str(registry),
               "--bootstrap", bootstrap, "--topic", topic, "--group", "month", "--output", str(output),
               "--until-end", "--batch-records", str(args.batch_records), "--log-seconds", "30"]
    samples = []
    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "160"})
        while proc.poll() is None:
            rss = rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - started, records_written(output, topic), rss))
            time.sleep(1.0)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"assay consume failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return seconds, samples


def check_output(output: Path, topic: str, n: int, batch_records: int) -> dict:
    """Rows add up, every id once, no file over the micro-batch size; file count and sizes."""
    files = sorted((output / topic).glob("p*/*.parquet"))
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    ids = ds.dataset(files, format="parquet").to_table(columns=["id"]).column("id")
    unique = len(pc.unique(ids))
    assert sum(rows) == n == unique, f"{sum(rows)} rows, {unique} unique ids, {n} produced"
    assert max(rows) <= batch_records
    sizes = [f.stat().st_size for f in files]
    return {"files": len(files), "max_rows_per_file": max(rows), "mean_rows_per_file": sum(rows) / len(rows),
            "output_mib": sum(sizes) / 2**20, "max_file_mib": max(sizes) / 2**20, "unique_ids": unique}


def plot(samples: list[tuple[float, int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([s[1] for s in samples], [s[2] for s in samples])
    ax.set_xlabel("records written (committed files)")
    ax.set_ylabel("consumer resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    broker = KafkaBroker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="assay-scale-") as tmp:
            root = Path(tmp)
            registry = build_registry(root)
            records = root / "records.parquet"
            write_records(records, args.records)
            topic = f"month-{uuid.uuid4().hex[:8]}"
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
            admin.create_topics([NewTopic(topic, args.partitions, 1)])
            admin.close()
            started = time.perf_counter()
            sent = produce(records, broker.bootstrap, topic)
            produce_s = time.perf_counter() - started
            output = root / "out"
            consume_s, samples = consume_and_sample(registry, broker.bootstrap, topic, output, args, root / "consume.log")
            checked = check_output(output, topic, sent, args.batch_records)
    finally:
        broker.stop()
    steady = [s for s in samples if s[1] >= 0.1 * sent]  # past the first 10 %: model loaded, group joined
    at = {f"{q:.0%}": next((round(s[2], 1) for s in samples if s[1] >= q * sent), None) for q in (0.1, 0.25, 0.5, 0.75, 0.99)}
    first, last = steady[0], steady[-1]  # records/s between them: scoring and I/O, no start-up
    steady_rps = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None
    result = {"records": sent, "partitions": args.partitions, "batch_records": args.batch_records,
              "produce_s": produce_s, "produce_rps": sent / produce_s, "consume_s": consume_s,
              "consume_rps": sent / consume_s, "steady_rps": steady_rps, "peak_rss_mib": max(s[2] for s in samples),
              "rss_mib_at_share_of_records": at,
              "steady_rss_min_max_mib": [min(s[2] for s in steady), max(s[2] for s in steady)] if steady else None,
              **checked, "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(samples, args.out.with_suffix(".png"),
         f"assay consume --until-end: {sent:,} records, {args.partitions} partitions, batches of {args.batch_records:,}")
    table = Table(title=f"A month at scale: {sent:,} records through the real broker")
    table.add_column("what")
    table.add_column("figure", justify="right")
    for name, value in [("produce (records/s)", f"{result['produce_rps']:,.0f}"),
                        ("consume: records/s (whole run, start-up included)", f"{result['consume_rps']:,.0f}"),
                        ("consume: records/s past the first 10 % (steady state)", f"{steady_rps or 0:,.0f}"),
                        ("consume: wall time", f"{consume_s:,.0f} s"),
                        ("peak resident memory", f"{result['peak_rss_mib']:,.0f} MiB"),
                        ("resident memory at 10/25/50/75/99 % of the records", " / ".join(f"{v}" for v in at.values())),
                        ("output files", f"{checked['files']:,} ({checked['output_mib']:,.0f} MiB)"),
                        ("rows per file: max / mean (limit)",
                         f"{checked['max_rows_per_file']:,} / {checked['mean_rows_per_file']:,.0f} ({args.batch_records:,})"),
                        ("every record once", f"{checked['unique_ids']:,} unique ids")]:
        table.add_row(name, value)
    console.print(table)


if __name__ == "__main__":
    main()
