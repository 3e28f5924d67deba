"""The Scorer on a real registry: current versions, base check, reload on promotion/rollback, adapters
added and removed at run time, shared lower layers really shared, the output table, bad adapters.

Uses the tiny random Llama-shaped base (fast); MiniLM parity is in test_parity_engine.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from engine_fixtures import make_adapter, make_llama_base, minilm, one_torch_thread, peft_probabilities, publish  # noqa: F401  (one_torch_thread: autouse)

from assay.engine import scorer as scorer_module
from assay.engine.adapters import AdapterError
from assay.engine.scorer import Scorer
from assay.schemas.output import RunMetadata, output_schema
from assay.schemas.registry import Registry, RegistryError

TEXTS = ["you stupid idiot", "thanks for the good edit please", "hate " * 80, "the", "", "love people"]
ADAPTERS = {  # name -> (rank, targets, layers)
    "all_qv": (4, ["q_proj", "v_proj"], None),
    "top_mlp": (8, ["gate_proj", "up_proj", "down_proj"], [2]),
    "top_attn": (16, ["k_proj", "o_proj"], [2]),
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("llama_engine")
    base = make_llama_base(root / "base", layers=3)
    adapters = {name: make_adapter(base, root / name, 20 + seed, rank, targets, layers, head="score")
                for seed, (name, (rank, targets, layers)) in enumerate(ADAPTERS.items())}
    return base, adapters


@pytest.fixture
def registry(tmp_path, llama) -> Path:
    """toxic v1 (all layers), threat v1 (top layer): both current."""
    base, adapters = llama
    root = tmp_path / "registry"
    publish(root, "toxic", 1, adapters["all_qv"], base, threshold=0.3, max_length=32)
    publish(root, "threat", 1, adapters["top_mlp"], base, threshold=0.7, max_length=48)
    return root


def reference(base: Path, adapter: Path, scorer: Scorer, texts: list[str]) -> np.ndarray:
    enc = scorer.tokenizer(texts, truncation=True, max_length=scorer.max_length, padding=True, return_tensors="pt")
    return peft_probabilities(base, adapter, enc["input_ids"], enc["attention_mask"]).numpy()


def test_from_registry_loads_each_current_version(registry, llama):
    base, adapters = llama
    scorer = Scorer.from_registry(registry)
    assert scorer.base == base  # from the manifests' base_model
    assert scorer.question_ids == ["threat", "toxic"]
    assert scorer.max_length == 48  # the longest training length
    assert dict(scorer.metadata("r").adapters) == {"threat": 1, "toxic": 1}
    got = scorer.score_texts(TEXTS)
    assert scorer.truncated == 1 and scorer.records == len(TEXTS)
    for qid, name in (("toxic", "all_qv"), ("threat", "top_mlp")):
        assert np.abs(got[qid] - reference(base, adapters[name], scorer, TEXTS)).max() < 1e-5, qid
    only = Scorer.from_registry(Registry(registry), questions=["toxic"], max_length=16)
    assert only.question_ids == ["toxic"] and only.max_length == 16


def test_from_registry_errors_are_clear(tmp_path, registry, llama):
    with pytest.raises(KeyError, match="no current adapter in the registry for: nope"):
        Scorer.from_registry(registry, questions=["toxic", "nope"])
    with pytest.raises(ValueError, match="empty: no question has a current adapter; train and promote"):
        Scorer.from_registry(tmp_path / "empty")
    other = make_llama_base(tmp_path / "other_base", layers=3, seed=7)
    with pytest.raises(RegistryError, match="was trained on base model"):
        Scorer.from_registry(registry, base=other)


def test_reload_follows_promotion_and_rollback_without_reloading_the_base(registry, llama):
    base, adapters = llama
    reg = Registry(registry)
    scorer = Scorer.from_registry(registry)
    model, weight = scorer.model.model, scorer.model.arch.stages[0].self_attn.q_proj.base.weight.data_ptr()
    before = scorer.score_texts(TEXTS)
    assert scorer.reload() == {}

    publish(registry, "toxic", 2, adapters["top_attn"], base, threshold=0.5, max_length=32)
    assert scorer.reload() == {"toxic": 2}
    after = scorer.score_texts(TEXTS)
    assert np.abs(after["toxic"] - reference(base, adapters["top_attn"], scorer, TEXTS)).max() < 1e-5
    assert np.abs(after["toxic"] - before["toxic"]).max() > 1e-3
    np.testing.assert_allclose(after["threat"], before["threat"], atol=1e-6)
    assert scorer.model.adapters["toxic"].threshold == 0.5

    reg.rollback("toxic")
    assert scorer.reload() == {"toxic": 1}
    np.testing.assert_allclose(scorer.score_texts(TEXTS)["toxic"], before["toxic"], atol=1e-6)

    publish(registry, "insult", 1, adapters["top_attn"], base)
    restricted = Scorer.from_registry(registry, questions=["toxic"])
    assert scorer.reload() == {"insult": 1} and restricted.reload() == {}
    assert scorer.question_ids == ["threat", "toxic", "insult"]
    assert scorer.model.model is model
    assert scorer.model.arch.stages[0].self_attn.q_proj.base.weight.data_ptr() == weight


def test_adapters_added_and_removed_at_run_time(llama):
    base, adapters = llama
    scorer = Scorer(base)
    with pytest.raises(RuntimeError, match="no adapters loaded"):
        scorer.score_texts(TEXTS)
    for name, path in adapters.items():
        scorer.add_adapter(name, path)
    together = scorer.score_texts(TEXTS)
    scorer.remove_adapter("top_mlp")
    assert scorer.question_ids == ["all_qv", "top_attn"]
    without = scorer.score_texts(TEXTS)
    for name in ("all_qv", "top_attn"):
        np.testing.assert_allclose(without[name], together[name], atol=1e-6)
    with pytest.raises(KeyError, match="'top_mlp' is not loaded"):
        scorer.remove_adapter("top_mlp")
    scorer.add_adapter("top_mlp", adapters["top_mlp"])
    np.testing.assert_allclose(scorer.score_texts(TEXTS)["top_mlp"], together["top_mlp"], atol=1e-6)


def stage_rows(scorer: Scorer) -> tuple[list[int], list]:
    """Rows each stage (layer, final norm) receives, recorded by forward pre-hooks."""
    seen: list[int] = []
    handles = [stage.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
        for stage in scorer.model.arch.stages]
    return seen, handles


@pytest.mark.parametrize("share_lower", [True, False])
def test_lower_layers_run_once_per_record(llama, share_lower):
    """Top-layer adapters only: layers 0-1 see B rows, layer 2 and the norm K*B; a full-depth adapter: all K*B."""
    base, adapters = llama
    scorer = Scorer(base, share_lower=share_lower)
    scorer.add_adapter("top_mlp", adapters["top_mlp"])
    scorer.add_adapter("top_attn", adapters["top_attn"])
    ids = torch.randint(3, 29, (5, 9), generator=torch.Generator().manual_seed(1))
    seen, handles = stage_rows(scorer)
    scorer.model.probabilities(ids, torch.ones_like(ids))
    assert seen == ([5, 5, 10, 10] if share_lower else [10, 10, 10, 10])
    scorer.add_adapter("all_qv", adapters["all_qv"])
    seen.clear()
    scorer.model.probabilities(ids, torch.ones_like(ids))
    assert seen == [15, 15, 15, 15] and scorer.model.fan_stage == 0
    for handle in handles:
        handle.remove()


def last_layer_rows(scorer: Scorer, module: torch.nn.Module) -> tuple[dict, dict, list]:
    """P(yes) with and without ``pooled_only``, and the input shapes ``module`` saw in each run."""
    shapes: list[tuple[int, ...]] = []
    handle = module.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    got = scorer.score_texts(TEXTS)
    scorer.model.pooled_only = False
    whole = scorer.score_texts(TEXTS)
    handle.remove()
    return got, whole, shapes


def test_decoder_last_mlp_runs_at_the_pooled_token_only(llama):
    """The last layer's MLP sees one token per row; switching that off changes no probability."""
    base, adapters = llama
    scorer = Scorer(base)
    for name, path in adapters.items():
        scorer.add_adapter(name, path)
    got, whole, shapes = last_layer_rows(scorer, scorer.model.arch.stages[2].mlp.down_proj)
    assert shapes[0][:2] == (3 * len(TEXTS), 1) and shapes[1][:2] == (3 * len(TEXTS), scorer.max_length)
    for name in adapters:
        np.testing.assert_allclose(got[name], whole[name], atol=1e-6)


def test_bert_last_layer_continues_with_the_first_token_only(tmp_path):
    scorer = Scorer(minilm(), max_length=24)
    scorer.add_adapter("q", make_adapter(minilm(), tmp_path / "q", 3, 4, ["query", "dense"], [5]))
    got, whole, shapes = last_layer_rows(scorer, scorer.model.arch.stages[5].intermediate)
    assert shapes[0][:2] == (len(TEXTS), 1) and shapes[1][:2] == (len(TEXTS), 24)
    np.testing.assert_allclose(got["q"], whole["q"], atol=1e-6)


def test_score_table_output_schema_and_answers(registry):
    scorer = Scorer.from_registry(registry)
    table = pa.table({"id": ["a", "b", "c", "d", "e", "f"], "text": TEXTS, "lang": ["en"] * 6})
    out = scorer.score_table(table, run_id="run-1")
    meta = RunMetadata(run_id="run-1", base_model=str(scorer.base), adapters={"threat": 1, "toxic": 1})
    assert out.schema.equals(output_schema(["threat", "toxic"], meta), check_metadata=True)
    assert out.column("id").to_pylist() == ["a", "b", "c", "d", "e", "f"]
    probs = scorer.score_texts(TEXTS)
    for qid, threshold in (("toxic", 0.3), ("threat", 0.7)):
        np.testing.assert_array_equal(out.column(f"{qid}_p").to_numpy(), probs[qid])
        np.testing.assert_array_equal(out.column(qid).to_numpy(zero_copy_only=False), probs[qid] >= threshold)
    assert scorer.score_table(table).schema.metadata is None


def test_chunks_and_token_budget_do_not_change_results(registry, monkeypatch):
    """Tiny chunks and a tiny budget (one record per batch) give the same P(yes) as one big batch."""
    texts = TEXTS * 7
    big = Scorer.from_registry(registry, batch_tokens=1_000_000).score_texts(texts)
    monkeypatch.setattr(scorer_module, "CHUNK_ROWS", 4)
    small = Scorer.from_registry(registry, batch_tokens=1).score_texts(texts)
    for qid in big:
        np.testing.assert_allclose(small[qid], big[qid], atol=1e-5)


def edited_adapter(source: Path, out: Path, **config) -> Path:
    shutil.copytree(source, out)
    path = out / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return out


def test_adapters_the_engine_cannot_apply_exactly_are_refused(tmp_path, llama):
    base, adapters = llama
    scorer = Scorer(base)
    with pytest.raises(AdapterError, match="use_dora=true is not supported"):
        scorer.add_adapter("q", edited_adapter(adapters["all_qv"], tmp_path / "dora", use_dora=True))
    with pytest.raises(AdapterError, match="not a PEFT adapter directory"):
        scorer.add_adapter("q", tmp_path)
    minilm_adapter = make_adapter(minilm(), tmp_path / "minilm", 0, 4, ["query"], [5])
    with pytest.raises(AdapterError, match="unexpected tensor 'base_model.model.classifier"):
        scorer.add_adapter("q", minilm_adapter)
    assert scorer.question_ids == []
