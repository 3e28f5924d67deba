"""The adapter registry: versions, CURRENT pointer, promote/rollback history, base-model check, CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from engine_fixtures import make_adapter, make_llama_base
from typer.testing import CliRunner

from assay.flows.cli import app
from assay.schemas.registry import Registry, RegistryError, base_sha256

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bases")
    return make_llama_base(root / "base_a", seed=0), make_llama_base(root / "base_b", seed=1)


@pytest.fixture(scope="module")
def adapter(bases, tmp_path_factory) -> Path:
    return make_adapter(bases[0], tmp_path_factory.mktemp("adapter") / "a", seed=3, rank=4,
                        target_modules=TARGETS, head="score")


def _manifest(base: Path, threshold: float = 0.4) -> dict:
    return {"base_model": str(base), "base_model_sha256": base_sha256(base), "threshold": threshold,
            "max_length": 32, "spec_version": 1, "training": {}, "sources": {}, "metrics": {}}


def test_save_allocates_versions_and_promote_sets_current(tmp_path, bases, adapter):
    registry = Registry(tmp_path / "reg")
    assert registry.questions() == [] and registry.current("toxic") is None
    first = registry.save("toxic", adapter, _manifest(bases[0]))
    second = registry.save("toxic", adapter, _manifest(bases[0], threshold=0.7))
    assert (first.version, second.version) == (1, 2)
    assert first.manifest["question_id"] == "toxic" and first.manifest["promoted"] is None
    assert registry.questions() == [] and registry.all_questions() == ["toxic"]
    assert [v.version for v in registry.versions("toxic")] == [1, 2]

    promoted = registry.promote("toxic", 2, reason="better F1")
    assert registry.questions() == ["toxic"]
    assert registry.current("toxic").version == 2 and promoted.threshold == pytest.approx(0.7)
    assert promoted.manifest["promoted"]["reason"] == "better F1"
    assert (tmp_path / "reg" / "toxic" / "CURRENT").read_text().strip() == "2"
    assert (promoted.path / "adapter_model.safetensors").is_file()


def test_rollback_walks_back_through_promotions(tmp_path, bases, adapter):
    registry = Registry(tmp_path)
    for _ in range(3):
        registry.save("q", adapter, _manifest(bases[0]))
    registry.promote("q", 1)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("q")
    registry.promote("q", 2)
    registry.promote("q", 3)
    assert registry.rollback("q").version == 2
    assert registry.rollback("q").version == 1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("q")
    assert [e["action"] for e in registry.history("q")] == ["promote"] * 3 + ["rollback"] * 2
    assert registry.history("q")[-1]["previous"] == 2


def test_unknown_version_and_bad_pointer_are_clear_errors(tmp_path, bases, adapter):
    registry = Registry(tmp_path)
    registry.save("q", adapter, _manifest(bases[0]))
    with pytest.raises(RegistryError, match=r"no version 7 \(versions: 1\)"):
        registry.get("q", 7)
    with pytest.raises(RegistryError, match="no version"):
        registry.promote("q", 7)
    (tmp_path / "q" / "CURRENT").write_text("latest\n")
    with pytest.raises(RegistryError, match="not a version number"):
        registry.current("q")
    with pytest.raises(RegistryError, match="not a PEFT adapter"):
        registry.save("q", tmp_path / "q", {})


def test_concurrent_saves_get_distinct_versions(tmp_path, bases, adapter):
    registry = Registry(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: registry.save("q", adapter, _manifest(bases[0])).version, range(8)))
    assert sorted(versions) == list(range(1, 9))
    assert not [p for p in (tmp_path / "q").iterdir() if p.name.startswith(".new-")]


def test_check_base_refuses_an_adapter_trained_on_another_base(tmp_path, bases, adapter):
    registry = Registry(tmp_path)
    version = registry.save("q", adapter, _manifest(bases[0]))
    registry.check_base(version, bases[0])
    with pytest.raises(RegistryError, match="trained on base model .*base_a.*retrain"):
        registry.check_base(version, bases[1])


def test_scorer_loads_registry_and_refuses_wrong_base(tmp_path, bases, adapter):
    from assay.engine.scorer import Scorer

    registry = Registry(tmp_path)
    registry.promote("q", registry.save("q", adapter, _manifest(bases[0])).version)
    scorer = Scorer.from_registry(tmp_path)
    assert scorer.question_ids == ["q"] and scorer.score_texts(["you are bad"])["q"].shape == (1,)
    with pytest.raises(RegistryError):
        Scorer.from_registry(registry, base=bases[1])


def test_registry_cli_list_show_promote_rollback(tmp_path, bases, adapter):
    registry = Registry(tmp_path)
    for threshold in (0.3, 0.6):
        registry.save("q", adapter, {**_manifest(bases[0], threshold), "metrics": {"holdout": {"f1": threshold}}})
    runner = CliRunner()
    result = runner.invoke(app, ["registry", "promote", "q", "1", "--registry", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["registry", "promote", "q", "2", "--registry", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["registry", "list", "--registry", str(tmp_path)])
    assert result.exit_code == 0 and "q" in result.output and "2" in result.output, result.output
    result = runner.invoke(app, ["registry", "show", "q", "--registry", str(tmp_path)])
    assert result.exit_code == 0 and "0.6" in result.output, result.output
    result = runner.invoke(app, ["registry", "rollback", "q", "--registry", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert registry.current_version("q") == 1
    result = runner.invoke(app, ["registry", "promote", "q", "9", "--registry", str(tmp_path)])
    assert result.exit_code == 1 and "no version 9" in result.output
    result = runner.invoke(app, ["registry", "list", "--registry", str(tmp_path), "--json"])
    assert json.loads(result.output)[0]["current"] == 1
