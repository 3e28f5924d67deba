"""`assay score`: Parquet parts in the output schema, the summary, bad input, and a real interruption
(a subprocess killed with SIGKILL mid-run) resumed with every record written exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_fixtures import make_adapter, make_llama_base, one_torch_thread, publish  # noqa: F401
from typer.testing import CliRunner

from assay.engine.scorer import Scorer
from assay.flows.cli import app
from assay.schemas.output import RunMetadata

DEV = Path(__file__).resolve().parents[2] / "examples" / "data" / "jigsaw" / "dev.parquet"
runner = CliRunner()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score_cli")
    base = make_llama_base(root / "base", layers=3)
    publish(root / "registry", "toxic", 1, make_adapter(base, root / "a", 1, 4, ["q_proj", "v_proj"], head="score"),
            base, threshold=0.4, max_length=32)
    publish(root / "registry", "threat", 1, make_adapter(base, root / "b", 2, 8, ["down_proj"], [2], head="score"),
            base, max_length=32)
    return root / "registry"


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """The 938 dev records plus three bad rows (null text, empty id, repeated id) at the end."""
    dev = pq.read_table(DEV, columns=["id", "text"])
    bad = pa.table({"id": ["x1", "", dev.column("id")[0].as_py()], "text": [None, "no id", "repeated id"]})
    path = tmp_path_factory.mktemp("records") / "records.parquet"
    pq.write_table(pa.concat_tables([dev, bad]), path)
    return path


def score(*args: str):
    return runner.invoke(app, ["score", *args])


def summary_value(output: str, name: str) -> str:
    """The value of one row of the final summary table."""
    row = next(line for line in output.splitlines() if name in line)
    return row.split("│")[-2].strip()


def read_parts(output: Path) -> pa.Table:
    return duckdb.sql(f"select * from read_parquet('{output}/part-*.parquet')").fetch_arrow_table()


def test_score_writes_bounded_parts_in_the_output_schema(tmp_path, registry, records):
    out = tmp_path / "out"
    result = score("--registry", str(registry), "--input", str(records), "--output", str(out), "--file-rows", "400")
    assert result.exit_code == 0, result.output
    assert summary_value(result.output, "records scored") == "938"
    assert summary_value(result.output, "part files") == "3"
    assert summary_value(result.output, "rejected rows").startswith("3")
    assert float(summary_value(result.output, "records×questions/s").replace(",", "")) > 0
    assert [pq.read_metadata(p).num_rows for p in sorted(out.glob("part-*.parquet"))] == [400, 400, 138]
    table = read_parts(out)
    assert table.num_rows == 938 and len(set(table.column("id").to_pylist())) == 938
    assert table.column_names == ["id", "threat", "threat_p", "toxic", "toxic_p"]
    meta = RunMetadata.from_schema(pq.read_schema(out / "part-00000.parquet"))
    assert dict(meta.adapters) == {"threat": 1, "toxic": 1} and meta.run_id
    assert pq.read_table(out / "rejects.parquet").column("reason").to_pylist() == [
        "text is null", "missing or empty id", f"duplicate id {table.column('id')[0].as_py()!r}"]
    dev = pq.read_table(DEV, columns=["id", "text"])
    expected = Scorer.from_registry(registry).score_texts(dev.column("text").to_pylist())
    got = pq.read_table(sorted(out.glob("part-*.parquet"))[0])
    np.testing.assert_allclose(got.column("toxic_p").to_numpy(), expected["toxic"][:400], atol=1e-6)
    np.testing.assert_array_equal(got.column("toxic").to_numpy(zero_copy_only=False), expected["toxic"][:400] >= 0.4)

    again = score("--registry", str(registry), "--input", str(records), "--output", str(out), "--file-rows", "400")
    assert again.exit_code == 0 and read_parts(out).num_rows == 938
    assert summary_value(again.output, "already done") == "938" and summary_value(again.output, "records scored") == "0"


def test_questions_option_and_clear_errors(tmp_path, registry, records):
    out = tmp_path / "out"
    result = score("--registry", str(registry), "--input", str(records), "--output", str(out), "--questions", "toxic")
    assert result.exit_code == 0, result.output
    assert read_parts(out).column_names == ["id", "toxic", "toxic_p"]
    other = score("--registry", str(registry), "--input", str(records), "--output", str(out))
    assert other.exit_code == 1 and "holds another run" in other.output and "questions" in other.output
    missing = score("--registry", str(registry), "--input", str(records), "--output", str(tmp_path / "o2"),
                    "--questions", "toxic,nope")
    assert missing.exit_code == 1 and "no current adapter in the registry for: nope" in missing.output
    no_input = score("--registry", str(registry), "--input", str(tmp_path / "none.parquet"), "--output",
                     str(tmp_path / "o3"))
    assert no_input.exit_code == 1 and "no such file or folder" in no_input.output
    bad_device = score("--registry", str(registry), "--input", str(records), "--output", str(tmp_path / "o4"),
                       "--device", "tpu")
    assert bad_device.exit_code == 2 and "cpu or cuda" in bad_device.output


def test_resume_after_sigkill_writes_every_record_exactly_once(tmp_path, registry, records):
    out = tmp_path / "out"
    args = ["--registry", str(registry), "--input", str(records), "--output", str(out), "--file-rows", "20",
            "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from assay.flows.cli import main; main()", "score", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress, parts = out / "progress.json", 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.is_file():
                parts = len(json.loads(progress.read_text())["parts"])
                if parts >= 3:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    recorded = json.loads(progress.read_text())
    assert not recorded["complete"] and 3 <= len(recorded["parts"]) < 47

    result = score(*args)
    assert result.exit_code == 0, result.output
    done = 20 * len(recorded["parts"])  # the recorded parts are skipped, not scored again
    assert summary_value(result.output, "already done") == f"{done:,}"
    assert summary_value(result.output, "records scored") == f"{938 - done:,}"
    table = read_parts(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 938
    assert ids == pq.read_table(DEV, columns=["id"]).column("id").to_pylist()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [f"part-{i:05d}.parquet" for i in range(47)]
    assert not list(out.glob(".part-*")) and json.loads(progress.read_text())["complete"]
    assert len({RunMetadata.from_schema(pq.read_schema(p)).run_id for p in out.glob("part-*.parquet")}) == 1
