"""LLM client throughput against the FAKE OpenAI server (tests/fake_openai.py) in its own process.

Measures records/s of `LlmTeacher.vote` at several concurrency levels with a fixed per-request latency,
then with a requests-per-minute limit (the limiter must hold the rate), then a re-run answered from the
SQLite cache (no request reaches the server). Run under the shared lock:

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_llm_client.py --records 800 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.settings import Settings
from assay.schemas import load_questions
from assay.schemas.questions import LlmSource

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_fake(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai.py"), "--port", str(port),
                               "--latency", str(latency), "--replay"], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()  # "FAKE OpenAI server at ..." once it listens
    return server, f"http://127.0.0.1:{port}/v1"


def timed_vote(base_url: str, run_dir: Path, ids: list[str], texts: list[str], **settings) -> tuple[float, dict]:
    spec = next(q.spec for q in load_questions(ROOT / "examples" / "questions" / "jigsaw") if q.spec.id == "is_bad")
    source = LlmSource(kind="llm", name="gpt", base_url=base_url, model="gpt-4o-mini", api_key_env="BENCH_KEY")
    teacher = LlmTeacher(spec, source, run_dir, Settings(**settings), progress=False)
    start = time.perf_counter()
    teacher.vote(ids, texts)
    elapsed = time.perf_counter() - start
    summary = teacher.summary()
    teacher.close()
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=800)
    parser.add_argument("--latency", type=float, default=0.05, help="fake server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rpm", type=int, default=1200, help="requests-per-minute limit for the limiter run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="also draw records/s against concurrency (PNG)")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_KEY", "sk-fake-bench")

    table = pq.read_table(ROOT / "examples" / "data" / "jigsaw" / "train.parquet", columns=["id", "text"])
    table = table.slice(0, args.records)
    ids, texts = table["id"].to_pylist(), table["text"].to_pylist()
    server, base_url = start_fake(args.latency)
    rows = []
    try:
        timed_vote(base_url, Path(tempfile.mkdtemp()), ids[:20], texts[:20], concurrency=4)  # warm-up
        for concurrency in args.concurrency:
            run_dir = Path(tempfile.mkdtemp())
            elapsed, s = timed_vote(base_url, run_dir, ids, texts, concurrency=concurrency)
            ideal = concurrency / args.latency
            rows.append({"run": f"concurrency {concurrency}", "records": len(ids), "requests": s["requests"],
                         "seconds": elapsed, "records_per_s": len(ids) / elapsed, "ideal_per_s": ideal})
            if concurrency == max(args.concurrency):
                elapsed, s = timed_vote(base_url, run_dir, ids, texts, concurrency=concurrency)
                rows.append({"run": "re-run from cache", "records": len(ids), "requests": s["requests"],
                             "seconds": elapsed, "records_per_s": len(ids) / elapsed, "ideal_per_s": None})
        limited = ids[: min(len(ids), args.rpm // 6)]  # about 10 s at the limit
        elapsed, s = timed_vote(base_url, Path(tempfile.mkdtemp()), limited, texts[: len(limited)],
                                concurrency=64, requests_per_minute=args.rpm)
        rows.append({"run": f"concurrency 64, limit {args.rpm}/min", "records": len(limited),
                     "requests": s["requests"], "seconds": elapsed, "records_per_s": len(limited) / elapsed,
                     "ideal_per_s": args.rpm / 60})
    finally:
        server.terminate()
        server.wait()

    report = Table(title=f"LLM client vs FAKE server ({args.latency * 1000:.0f} ms per request, {os.cpu_count()} cores)")
    for column in ("run", "records", "requests sent", "seconds", "records/s", "bound (conc/latency or limit)"):
        report.add_column(column, justify="left" if column == "run" else "right")
    for row in rows:
        report.add_row(row["run"], str(row["records"]), str(row["requests"]), f"{row['seconds']:.2f}",
                       f"{row['records_per_s']:.1f}", "-" if row["ideal_per_s"] is None else f"{row['ideal_per_s']:.1f}")
    Console().print(report)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                        indent=2) + "\n")
    if args.plot:
        plot(rows, args.concurrency, args.latency, args.plot)


def plot(rows: list[dict], levels: list[int], latency: float, path: Path) -> None:
    """records/s at each concurrency level, with the latency bound concurrency / latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row["records_per_s"] for row in rows if row["run"].startswith("concurrency ") and "limit" not in row["run"]]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(levels, measured, "o-", label="measured")
    axis.plot(levels, [level / latency for level in levels], "--", color="grey", label="bound: concurrency / latency")
    axis.set(xscale="log", yscale="log", xlabel="concurrency (requests in flight)", ylabel="records / s",
             title=f"LLM client vs FAKE server, {latency * 1000:.0f} ms a request")
    axis.set_xticks(levels, [str(level) for level in levels])
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
