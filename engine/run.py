"""A resumable scoring run: records from files into Parquet part files of a fixed number of records.

Part boundaries are deterministic: part ``i`` holds valid records ``[i*file_rows, (i+1)*file_rows)``
of the input in reading order. Each part is written atomically, then recorded in
``OUTPUT/progress.json`` (also written atomically). A re-run with the same input, questions, adapter
versions and ``file_rows`` skips the recorded parts and continues: no record is lost or written
twice (a part written but not yet recorded is rewritten under the same name, and temporary files of
an interrupted write are removed). One run at a time writes to a folder (``OUTPUT/.lock``). Rejected
input rows go to ``OUTPUT/rejects.parquet``.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from assay.schemas.files import write_text_atomic
from assay.schemas.output import write_parquet_atomic
from assay.schemas.records import FORMATS, RecordReader, input_files

from .scorer import Scorer

PROGRESS_FILE = "progress.json"
REJECTS_FILE = "rejects.parquet"


class ResumeError(ValueError):
    """The output folder holds an interrupted run that does not match this one."""


@dataclass(frozen=True)
class RunSummary:
    """What a run did: records scored now and skipped as already done, parts, truncations, rejects."""

    output: Path
    run_id: str
    questions: list[str]
    scored: int
    skipped: int
    parts: int
    truncated: int
    rejects: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def part_name(index: int) -> str:
    """File name of part ``index``."""
    return f"part-{index:05d}.parquet"


def _parts(reader: RecordReader, file_rows: int) -> Iterator[pa.Table]:
    """Re-cut the reader's validated tables into tables of exactly ``file_rows`` records (last: the rest)."""
    pending: list[pa.Table] = []
    count = 0
    for table in reader:
        pending.append(table.select(["id", "text"]))
        count += table.num_rows
        while count >= file_rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, file_rows)
            rest = whole.slice(file_rows)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(pending)


def _start(output: Path, identity: dict) -> dict:
    """The progress record: the interrupted run's when it matches ``identity``, else a new one."""
    path = output / PROGRESS_FILE
    if not path.is_file():
        if output.is_dir() and any(output.glob("part-*.parquet")):
            raise ResumeError(f"{output}: holds part files but no {PROGRESS_FILE}; use an empty output folder")
        return {**identity, "run_id": uuid.uuid4().hex, "parts": [], "complete": False}
    progress = json.loads(path.read_text())
    differences = [key for key, value in identity.items() if progress.get(key) != value]
    if differences:
        details = "; ".join(f"{key}: was {progress.get(key)!r}, now {identity[key]!r}" for key in differences)
        raise ResumeError(f"{output} holds another run ({details}). Re-run with the same settings to resume, "
                          "or choose a new --output folder")
    return progress


@contextmanager
def _exclusive(output: Path) -> Iterator[None]:
    """Hold ``output/.lock`` for the run; a second run on the same folder fails at once with a clear error."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResumeError(f"{output}: another `assay score` is writing to this folder; wait for it "
                              "or choose a new --output folder") from None
        yield


def total_records(path: Path) -> int | None:
    """Row count when every input file is Parquet (read from the footers), else unknown."""
    files = input_files(path)
    if all(FORMATS[f.suffix.lower()] == "parquet" for f in files):
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return None


def score_files(scorer: Scorer, input_path: str | Path, output: str | Path, file_rows: int = 50_000,
                show_progress: bool = True) -> RunSummary:
    """Score every record under ``input_path`` into ``output/part-NNNNN.parquet``, resuming a previous run."""
    if file_rows < 1:
        raise ValueError(f"file_rows must be >= 1, got {file_rows}")
    input_path, output = Path(input_path), Path(output)
    versions = {qid: int(version) for qid, version in scorer.metadata("").adapters.items()}
    identity = {"input": str(input_path.resolve()), "questions": scorer.question_ids, "file_rows": file_rows,
                "adapters": versions, "base_model": str(scorer.base)}
    with _exclusive(output):
        progress = _start(output, identity)
        for stale in output.glob(".part-*.tmp"):  # a write cut short by an interruption
            stale.unlink()
        done = progress["parts"]
        reader = RecordReader(input_path, batch_rows=min(file_rows, 10_000))
        truncated_before, started = scorer.truncated, time.perf_counter()
        scored = skipped = 0
        bar = tqdm(total=total_records(input_path), unit="rec", desc="scoring", disable=not show_progress,
                   dynamic_ncols=True)
        with bar:
            for index, part in enumerate(_parts(reader, file_rows)):
                if index < len(done):
                    first = part.column("id")[0].as_py()
                    if done[index]["first_id"] != first or done[index]["rows"] != part.num_rows:
                        raise ResumeError(f"the input changed since the interrupted run: part {index} now starts at "
                                          f"id {first!r} with {part.num_rows} rows, it was {done[index]}")
                    skipped += part.num_rows
                    bar.update(part.num_rows)
                    continue
                table = scorer.score_table(part, run_id=progress["run_id"])
                write_parquet_atomic(table, output / part_name(index))
                done.append({"file": part_name(index), "rows": part.num_rows,
                             "first_id": part.column("id")[0].as_py()})
                write_text_atomic(json.dumps(progress, indent=1), output / PROGRESS_FILE)
                scored += part.num_rows
                bar.update(part.num_rows)
        reader.rejects.write(output / REJECTS_FILE)
        progress["complete"] = True
        write_text_atomic(json.dumps(progress, indent=1), output / PROGRESS_FILE)
    return RunSummary(output=output, run_id=progress["run_id"], questions=scorer.question_ids, scored=scored,
                      skipped=skipped, parts=len(done), truncated=scorer.truncated - truncated_before,
                      rejects=len(reader.rejects), seconds=time.perf_counter() - started)
