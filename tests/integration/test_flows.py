"""The Prefect flows, run for real against Prefect's ephemeral test API (one per session), on real
PEFT adapters in a real registry (tiny random Llama base, so it stays fast on CPU)."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_fixtures import WORDS, make_adapter, make_llama_base
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker

from assay.engine.scorer import Scorer
from assay.flows import events, report
from assay.flows.batch import monthly_batch
from assay.flows.watch import STATE_FILE, scan_questions
from assay.schemas.registry import Registry, base_sha256

QUESTION = """\
id: {qid}
version: {version}
question: Is this comment rude?
sources:
  - kind: rules
    yes_keywords: [stupid, idiot]
"""


def server_events(prefix: str, since: float, expect: int, timeout: float = 30.0) -> list:
    """Events named ``prefix*`` that reached the API since ``since`` (the server persists them in batches)."""
    from datetime import datetime

    from prefect.client.orchestration import get_client

    EventsWorker.drain_all()
    wanted = EventFilter(event=EventNameFilter(prefix=[prefix]),
                         occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC)))
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_events(filter=wanted, limit=50).events
            if len(found) >= expect or time.time() > deadline:
                return found
            time.sleep(0.5)


@pytest.fixture(scope="module")
def llama_registry(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """A registry with q1 v1 and q2 v1 current, plus a second q1 adapter not yet saved."""
    root = tmp_path_factory.mktemp("flows")
    base = make_llama_base(root / "base", layers=2)
    adapters = {name: make_adapter(base, root / name, seed, 4, ["q_proj", "v_proj"], head="score", lora_std=0.5)
                for seed, name in enumerate(["q1_v1", "q2_v1", "q1_v2"])}
    registry = Registry(root / "registry")
    manifest = {"base_model": str(base), "base_model_sha256": base_sha256(base), "max_length": 32,
                "threshold": 0.5, "spec_version": 1}
    for name in ("q1_v1", "q2_v1"):
        qid = name.split("_")[0]
        registry.promote(qid, registry.save(qid, adapters[name], manifest).version)
    return base, registry.root, adapters


def records(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))) for _ in range(n)]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": texts}), path)
    return path


def test_emitted_events_reach_the_api(prefect_api):
    since = time.time() - 1
    event = events.emit(events.QUESTION_ADDED, events.question_resource("is_rude"), {"question_id": "is_rude"})
    assert event is not None and event.event == "assay.question.added"
    found = server_events("assay.question.added", since, expect=1)
    assert [e.resource.id for e in found] == ["assay.question.is_rude"]
    with pytest.raises(ValueError, match="unknown Assay event"):
        events.emit("assay.question.renamed", "assay.question.x", {})


def test_monthly_batch_scores_reports_and_compares_with_last_month(prefect_api, llama_registry, tmp_path):
    base, registry, _ = llama_registry
    data = records(tmp_path / "october.parquet", 300, seed=1)
    out = tmp_path / "batches"
    since = time.time() - 1
    october = monthly_batch(str(registry), str(out), input=str(data), month="2026-10")
    november = monthly_batch(str(registry), str(out), input=str(records(tmp_path / "nov.parquet", 200, seed=2)),
                             month="2026-11", gpu_hour_usd=3.6)
    # the output is real Parquet: DuckDB reads it and agrees with the report
    parts = str(out / "2026-11" / "scores" / "part-*.parquet")
    rows, q1_yes = duckdb.sql(f"select count(*), avg(q1::int) from read_parquet('{parts}')").fetchone()
    assert rows == november["records"] == 200
    assert november["yes_rate"]["q1"] == pytest.approx(q1_yes)
    assert 0 < q1_yes < 1  # random non-zero adapters: both answers occur
    assert november["yes_rate_previous"] == october["yes_rate"]
    assert november["yes_rate_change"]["q2"] == pytest.approx(november["yes_rate"]["q2"] - october["yes_rate"]["q2"])
    assert october["yes_rate_previous"] == {"q1": None, "q2": None}
    assert november["cost_usd"] == pytest.approx(november["seconds"] / 3600 * 3.6)
    folder = out / "2026-11"
    assert json.loads((folder / "report.json").read_text())["records"] == 200
    assert "| q1 |" in (folder / "report.md").read_text()
    assert (folder / "yes_rates.png").read_bytes()[:4] == b"\x89PNG"
    found = server_events("assay.batch.finished", since, expect=2)
    assert sorted(e.payload["month"] for e in found) == ["2026-10", "2026-11"]


@pytest.mark.kafka
def test_kafka_snapshot_and_stream_consumer_flows(prefect_api, kafka_broker, llama_registry, tmp_path):
    from assay.engine.stream import produce
    from assay.flows.stream import stream_consumer

    _, registry, _ = llama_registry
    topic = f"flows-{time.time_ns()}"
    assert produce(records(tmp_path / "r.parquet", 120, seed=3), kafka_broker.bootstrap, topic, progress=False) == 120
    built = monthly_batch(str(registry), str(tmp_path / "batches"), bootstrap=kafka_broker.bootstrap, topic=topic,
                          month="2026-09")
    assert built["records"] == built["scored"] == 120 and built["source"].endswith(topic)
    files = report.output_files(tmp_path / "batches" / "2026-09" / "scores")
    ids = duckdb.sql(f"select distinct id from read_parquet({files!r})").fetchall()
    assert len(ids) == 120  # every message once
    streamed = stream_consumer(str(registry), kafka_broker.bootstrap, topic, str(tmp_path / "stream"),
                               group="flows-stream", until_end=True)
    assert streamed["records"] == 120 and streamed["stopped_by"] == "end"


def test_monthly_batch_needs_exactly_one_source(prefect_api, llama_registry, tmp_path):
    _, registry, _ = llama_registry
    with pytest.raises(ValueError, match="exactly one source"):
        monthly_batch(str(registry), str(tmp_path), month="2026-10")


def test_promotion_reaches_a_scorer_built_before_it(prefect_api, llama_registry, tmp_path):
    """A consumer's Scorer picks up a newly promoted adapter on reload(), without reloading the base."""
    base, root, adapters = llama_registry
    registry = Registry(root)
    texts = [" ".join(WORDS[i:i + 6]) for i in range(0, 20)]
    running = Scorer.from_registry(root)
    before = running.score_texts(texts)
    model = running.model
    manifest = {**registry.current("q1").manifest, "promoted": None}
    version = registry.save("q1", adapters["q1_v2"], manifest).version
    registry.promote("q1", version, reason="test")
    assert running.reload() == {"q1": version}
    after = running.score_texts(texts)
    fresh = Scorer.from_registry(root).score_texts(texts)
    assert running.model is model  # same base, no restart
    np.testing.assert_allclose(after["q1"], fresh["q1"], atol=1e-6)
    np.testing.assert_allclose(after["q2"], before["q2"], atol=1e-6)
    assert np.abs(after["q1"] - before["q1"]).max() > 1e-3
    registry.rollback("q1")
    assert running.reload() == {"q1": 1}


def test_scan_questions_announces_new_and_changed_questions_once(prefect_api, llama_registry, tmp_path):
    _, registry, _ = llama_registry
    folder = tmp_path / "questions"
    folder.mkdir()
    (folder / "q1.yaml").write_text(QUESTION.format(qid="q1", version=1))  # trained on spec v1: nothing to do
    (folder / "q2.yaml").write_text(QUESTION.format(qid="q2", version=2))  # registry has only v1: changed
    (folder / "is_mean.yaml").write_text(QUESTION.format(qid="is_mean", version=1))  # not in registry: added
    (folder / "broken.yaml").write_text("id: Broken Id\nversion: 1\n")
    since = time.time() - 1
    first = scan_questions(str(folder), str(registry))
    assert {(c["question_id"], c["kind"]) for c in first} == {("q2", "changed"), ("is_mean", "added")}
    assert scan_questions(str(folder), str(registry)) == []  # announced once
    assert set(json.loads((folder / STATE_FILE).read_text())) == {"q2", "is_mean"}
    (folder / "is_mean.yaml").write_text(QUESTION.format(qid="is_mean", version=1).replace("idiot", "moron"))
    again = scan_questions(str(folder), str(registry))
    assert [(c["question_id"], c["kind"]) for c in again] == [("is_mean", "added")]  # edited before training
    found = server_events("assay.question.", since, expect=3)
    names = sorted((e.event, e.payload["question_id"]) for e in found)
    assert names == [("assay.question.added", "is_mean"), ("assay.question.added", "is_mean"),
                     ("assay.question.changed", "q2")]
    assert all(Path(e.payload["path"]).is_file() for e in found)


def test_cli_watch_questions_once_and_monthly_error(prefect_api, llama_registry, tmp_path):
    from typer.testing import CliRunner

    from assay.flows.cli import app

    _, registry, _ = llama_registry
    folder = tmp_path / "questions"
    folder.mkdir()
    (folder / "is_new.yaml").write_text(QUESTION.format(qid="is_new", version=1))
    (folder / "bad.yaml").write_text("id: is_bad\nversion: one\n")
    runner = CliRunner()
    result = runner.invoke(app, ["watch-questions", str(folder), "--registry", str(registry), "--once"])
    assert result.exit_code == 0, result.output
    assert "is_new: added (spec v1" in result.output
    assert "bad.yaml:2: version" in result.output  # file, line, field of the broken file; the others go on
    data = records(tmp_path / "r.parquet", 10)
    result = runner.invoke(app, ["monthly", "--registry", str(registry), "--out", str(tmp_path / "o"),
                                 "--input", str(data), "--topic", "t"])
    assert result.exit_code == 1 and "exactly one source" in result.output


ONBOARD = """\
id: is_rude
version: 1
question: Is this comment rude?
sources:
  - kind: rules
    yes_keywords: [stupid, idiot, hate]
    no_keywords: [thanks, nice, please]
  - kind: labels_file
    path: answers.parquet
training:
  base_model: {base}
  epochs: 2
promotion:  # a 200-record seed: too few held-out positives for the default gate (tested in test_evaluate.py)
  min_holdout_positives: 10
  beat_baseline: false
"""


def test_onboard_question_labels_trains_promotes_and_reaches_a_running_scorer(prefect_api, llama_registry, tmp_path):
    from assay.flows.pipeline import onboard_question

    base, root, _ = llama_registry
    pool = records(tmp_path / "pool.parquet", 240, seed=4)
    texts = pq.read_table(pool).column("text").to_pylist()
    rude = [any(w in t.split() for w in ("stupid", "idiot", "hate")) for t in texts]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(0, 240, 2)], "label": rude[::2]}),
                   tmp_path / "answers.parquet")
    spec = tmp_path / "is_rude.yaml"
    spec.write_text(ONBOARD.format(base=base))
    running = Scorer.from_registry(root)  # a consumer started before the question existed
    assert running.question_ids == ["q1", "q2"]
    run_dir, since = tmp_path / "run", time.time() - 1
    result = onboard_question(str(spec), str(pool), str(root), str(run_dir), sample=200)
    assert result["decision"]["promoted"], result["decision"]
    assert Registry(root).current_version("is_rude") == result["train"]["version"] == 1
    labels = pq.read_table(run_dir / "labels" / "labels" / "is_rude.parquet")
    assert labels.num_rows == 200 and set(labels.column("label").to_pylist()) == {0, 1}
    assert running.reload() == {"is_rude": 1}
    probe = texts[:16]
    np.testing.assert_allclose(running.score_texts(probe)["is_rude"],
                               Scorer.from_registry(root).score_texts(probe)["is_rude"], atol=1e-6)
    promoted = server_events("assay.adapter.promoted", since, expect=1)
    assert [(e.payload["question_id"], e.payload["version"]) for e in promoted] == [("is_rude", 1)]
    again = onboard_question(str(spec), str(pool), str(root), str(run_dir), sample=200)  # nothing changed
    assert again["train"]["version"] == 1 and again["decision"]["reason"] == "v1 is already current"
    assert [v.version for v in Registry(root).versions("is_rude")] == [1]


COSTLY = """\
id: is_costly
version: 1
question: Is this comment rude?
sources:
  - kind: rules
    yes_keywords: [stupid, idiot]
  - kind: llm
    name: gpt
    base_url: {url}
    model: gpt-4
    api_key_env: ASSAY_TEST_FAKE_KEY
"""


def test_label_flow_reports_a_spent_llm_budget_as_an_event(prefect_api, tmp_path, monkeypatch):
    from fake_openai import FakeOpenAI

    from assay.flows.pipeline import label

    monkeypatch.setenv("ASSAY_TEST_FAKE_KEY", "sk-fake-test")
    config = tmp_path / "assay.yaml"
    config.write_text("request_timeout_s: 5\nbackoff_base_s: 0.01\nbackoff_max_s: 0.05\n")
    monkeypatch.setenv("ASSAY_CONFIG", str(config))
    pool = records(tmp_path / "pool.parquet", 60, seed=5)
    since = time.time() - 1
    with FakeOpenAI(answer=lambda text: 0.9) as fake:
        (tmp_path / "is_costly.yaml").write_text(COSTLY.format(url=fake.base_url))
        result = label(str(tmp_path / "is_costly.yaml"), str(pool), str(tmp_path / "run"), sample=60,
                       budget_usd=0.002)  # gpt-4 list price: a few requests
    teacher = result["is_costly"]["summary"]["teachers"]["gpt"]
    assert teacher["budget_exhausted"] and teacher["cost_usd"] <= 0.002
    assert fake.chat_requests < 60
    found = server_events("assay.budget.exhausted", since, expect=1)
    assert [(e.payload["question_id"], e.payload["source"]) for e in found] == [("is_costly", "gpt")]
    assert pq.read_table(tmp_path / "run" / "labels" / "labels" / "is_costly.parquet").num_rows == 60


def test_previous_month_wraps_the_year():
    assert report.previous_month("2027-01") == "2026-12"
    assert report.previous_month("2026-11") == "2026-10"


def test_evaluation_is_not_reused_for_another_adapter_under_the_same_version(prefect_api, llama_registry, tmp_path):
    """A registry made again in the same folder (`make demo-fresh`) numbers its new adapters 1 again: the cached
    evaluation of the old v1 must not come back for them."""
    from assay.flows.pipeline import evaluate_adapter

    base, _, adapters = llama_registry
    run_dir, folder = tmp_path / "run", tmp_path / "registry"
    (run_dir / "labels" / "labels").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["r0"], "p_yes": [0.9], "label": [1]}), run_dir / "labels" / "labels" / "q1.parquet")
    measured = []
    for name, f1 in (("q1_v1", 0.61), ("q1_v2", 0.72)):
        Registry(folder).save("q1", adapters[name], {"base_model": str(base), "threshold": 0.5,
                                                      "metrics": {"holdout": {"f1": f1}}})
        measured.append(evaluate_adapter(str(folder), "q1", 1, str(run_dir))["holdout"]["f1"])
        shutil.rmtree(folder)
    assert measured == [0.61, 0.72]
