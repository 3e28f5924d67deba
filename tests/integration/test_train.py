"""Distillation: labels checks, the shared lower-layer cache, training, the saved PEFT adapter, `assay train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from engine_fixtures import WORDS, make_llama_base, minilm, peft_probabilities
from peft import PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from assay.distill.base import TrainConfig, load_base, lora_config, make_cache, quantization_config
from assay.distill.cache import upper_layers_only
from assay.distill.data import LabelsError, load_question_data, split_holdout
from assay.distill.train import _forward, train_question, train_questions
from assay.flows.cli import app
from assay.schemas.loader import LoadedQuestion
from assay.schemas.questions import QuestionSpec
from assay.schemas.registry import Registry

BAD = {"idiot", "kill"}
TINY = {"max_length": 32, "epochs": 3, "batch_size": 16, "learning_rate": 1e-2, "top_layers": 1, "lora_rank": 4,
        "threads": 1}


def spec(question_id: str = "is_bad", **extra) -> QuestionSpec:
    return QuestionSpec(id=question_id, version=3, question="Is this comment bad?",
                        sources=[{"kind": "rules", "yes_keywords": sorted(BAD)}], **extra)


def loaded(tmp_path: Path, question_id: str = "is_bad", **extra) -> LoadedQuestion:
    return LoadedQuestion(spec=spec(question_id, **extra), path=tmp_path / f"{question_id}.yaml")


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]


def write_labels(folder: Path, n: int = 160, question_ids=("is_bad",), seed: int = 0,
                 p_yes=None) -> Path:
    """A label run folder: seed.parquet and labels/<q>.parquet with soft labels from the BAD words."""
    texts = make_texts(n, seed)
    ids = [f"r{i}" for i in range(n)]
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts}), folder / "seed.parquet")
    if p_yes is None:
        p_yes = np.array([0.9 if BAD & set(t.split()) else 0.1 for t in texts], dtype=np.float32)
    for qid in question_ids:
        pq.write_table(pa.table({"id": ids, "p_yes": pa.array(p_yes, pa.float32()),
                                 "label": pa.array((np.asarray(p_yes) >= 0.5).astype(np.int8))}),
                       folder / "labels" / f"{qid}.parquet")
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return make_llama_base(tmp_path_factory.mktemp("llama") / "base", layers=3)


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return write_labels(tmp_path_factory.mktemp("labels"), n=200)


# ---- labels ------------------------------------------------------------------------------------
def test_unusable_labels_are_refused_with_the_file_and_a_fix(tmp_path):
    write_labels(tmp_path / "none", p_yes=np.zeros(160, np.float32))
    with pytest.raises(LabelsError, match=r"is_bad.parquet: 0 record\(s\) with p_yes >= 0.5.*stratify"):
        load_question_data(tmp_path / "none", "is_bad")
    # a stated rate the label run follows, on sources too weak to make any record likelier yes than not (a
    # fallback moved to a 2.5 % balance, on a FOLDOC question): asking for the rate again would be no fix
    stated = write_labels(tmp_path / "stated", p_yes=np.full(160, 0.02, np.float32))
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(160)], "p_yes": pa.array(np.full(160, 0.02), pa.float32()),
                             "label": pa.array((np.arange(160) < 4).astype(np.int8))}),
                   stated / "labels" / "is_bad.parquet")
    with pytest.raises(LabelsError, match=r"labels 4 of them yes at its class balance.*find yes cases") as refused:
        load_question_data(stated, "is_bad")
    assert "expected_yes_rate" not in str(refused.value)
    folder = write_labels(tmp_path / "abstain")
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(160)], "p_yes": pa.nulls(160, pa.float32())}),
                   folder / "labels" / "is_bad.parquet")
    with pytest.raises(LabelsError, match="all sources abstained"):
        load_question_data(folder, "is_bad")
    pq.write_table(pa.table({"id": ["r1", "x9"], "p_yes": pa.array([1.0, 0.0], pa.float32())}),
                   folder / "labels" / "is_bad.parquet")
    with pytest.raises(LabelsError, match=r"1 id\(s\) are not in .*seed.parquet.*'x9'"):
        load_question_data(folder, "is_bad")
    write_labels(tmp_path / "few", n=10)
    with pytest.raises(LabelsError, match="only 10 labelled record"):
        load_question_data(tmp_path / "few", "is_bad")
    with pytest.raises(LabelsError, match="no labels for question 'threat'.*assay label"):
        load_question_data(folder, "threat")
    with pytest.raises(LabelsError, match="seed.parquet: missing"):
        load_question_data(tmp_path, "is_bad")


def test_holdout_split_is_stratified_and_repeatable(labels):
    data = load_question_data(labels, "is_bad")
    train, hold = split_holdout(data, 0.2, seed=0)
    assert set(train).isdisjoint(hold) and len(train) + len(hold) == len(data)
    assert abs(data.label[hold].mean() - data.label.mean()) < 0.05
    assert np.array_equal(hold, split_holdout(data, 0.2, seed=0)[1])
    assert not np.array_equal(hold, split_holdout(data, 0.2, seed=1)[1])


def test_config_layers_spec_then_overrides(tmp_path):
    question = loaded(tmp_path, training={"lora_rank": 16, "epochs": 5, "top_layers": 3})
    config = TrainConfig.for_spec(question, epochs=1, max_length=None)
    assert (config.lora_rank, config.epochs, config.top_layers, config.max_length) == (16, 1, 3, 128)
    with pytest.raises(TypeError, match="unknown training option.*epoch_count"):
        TrainConfig.for_spec(question, epoch_count=2)


def test_qlora_config_is_4bit_nf4_on_cuda_only():
    quant = quantization_config(TrainConfig(device="cuda"), weight_bytes=14 * 1024**3)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config(TrainConfig(device="cuda"), weight_bytes=90 * 1024**2) is None
    assert quantization_config(TrainConfig(), weight_bytes=14 * 1024**3) is None
    with pytest.raises(ValueError, match="needs a CUDA device"):
        quantization_config(TrainConfig(quantize_4bit=True))


# ---- shared lower layers -----------------------------------------------------------------------
@pytest.mark.parametrize("which", ["llama", "minilm"])
def test_training_on_the_cache_equals_the_full_model_and_saves_a_standard_adapter(which, llama, tmp_path):
    base = llama if which == "llama" else minilm()
    config = TrainConfig(max_length=32, top_layers=1 if which == "llama" else 2, lora_rank=4)
    cache = make_cache(base, config)
    assert cache.layer == cache.arch.n_layers - config.top_layers > 0
    torch.manual_seed(0)
    model = get_peft_model(load_base(base, config), lora_config(cache.model, config))
    with torch.no_grad():  # PEFT starts B at zero: randomise so the LoRA path matters
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    model.eval()
    texts = ["you are a stupid idiot", "thanks for the article edit", "the talk page", "kill"]
    cache.fill(texts, progress=False)
    with torch.no_grad(), upper_layers_only(model.base_model.model, cache.arch, cache.layer) as feed:
        cached = _forward(model, feed, cache, texts, "cpu")
    batch = cache.batch(texts)
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    lora_layers = {int(n.split(".layers." if which == "llama" else ".layer.")[1].split(".")[0])
                   for n, _ in model.named_parameters() if "lora_A" in n}
    assert lora_layers == set(range(cache.layer, cache.arch.n_layers))
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2),
                                         str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        again = reloaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(again, full, atol=1e-5, rtol=1e-5)


# ---- training ----------------------------------------------------------------------------------
def test_train_question_learns_and_repeats_exactly(llama, labels, tmp_path):
    registry = Registry(tmp_path / "reg")
    first = train_question(loaded(tmp_path), labels, registry, base=llama, progress=False, **TINY)
    second = train_question(loaded(tmp_path), labels, registry, base=llama, progress=False, **TINY)
    assert (first.version, second.version) == (1, 2) and registry.current("is_bad") is None
    a = (first.path / "adapter_model.safetensors").read_bytes()
    assert a == (second.path / "adapter_model.safetensors").read_bytes()  # fixed seeds: the same adapter
    manifest = first.manifest
    assert manifest["spec_version"] == 3 and manifest["base_model"] == str(llama)
    assert manifest["max_length"] == 32 and 0 < manifest["threshold"] < 1
    assert manifest["training"]["layers_to_transform"] == [2]
    assert manifest["metrics"]["holdout"]["auc"] > 0.9, manifest["metrics"]
    assert len(json.loads((first.path / "holdout_ids.json").read_text())) == manifest["training"]["holdout_records"]
    assert (first.path / "reliability.png").stat().st_size > 1000


def test_train_questions_promotes_and_engine_matches_peft(llama, tmp_path):
    labels = write_labels(tmp_path / "labels", n=200, question_ids=("is_bad", "rude"))
    gold = tmp_path / "gold.parquet"
    texts = make_texts(60, seed=7)
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(60)], "text": texts,
                             "is_bad": [int(bool(BAD & set(t.split()))) for t in texts]}), gold)
    lenient = {"min_holdout_positives": 5, "beat_baseline": False}  # a 40-record hold-out; TF-IDF finds the words
    questions = [loaded(tmp_path, "is_bad", promotion={"min_f1": 0.5, **lenient}),
                 loaded(tmp_path, "rude", promotion={"min_f1": 0.99, "min_precision": 0.99, **lenient})]
    results = train_questions(questions, labels, tmp_path / "reg", base=llama, gold_path=gold, progress=False, **TINY)
    by_id = {r.question_id: r for r in results}
    assert by_id["is_bad"].decision.promoted, by_id["is_bad"].decision
    assert by_id["is_bad"].metrics["gold"]["n"] == 60 and by_id["is_bad"].metrics["gold"]["auc"] > 0.9
    assert "gold" not in by_id["rude"].metrics  # the gold file has no column for it
    assert not by_id["rude"].decision.promoted and "min_f1 0.99" in by_id["rude"].decision.reason
    registry = Registry(tmp_path / "reg")
    assert registry.questions() == ["is_bad"]
    assert "promoted" in registry.current("is_bad").manifest["decision"]

    from assay.engine.batching import encode
    from assay.engine.lexical import fuse, load_lexical_head
    from assay.engine.scorer import Scorer

    scorer = Scorer.from_registry(tmp_path / "reg")
    engine = scorer.score_texts(texts[:8])["is_bad"]
    encoded = encode(scorer.tokenizer, texts[:8], 32)
    folder = registry.current("is_bad").path
    head = load_lexical_head(folder)  # saved by `assay train`, fused with the adapter's P(yes)
    assert head is not None and {"lexical_head.json", "lexical_head.safetensors"} <= {f.name for f in folder.iterdir()}
    for k in range(8):
        ids = torch.tensor([encoded.ids[k]])
        reference = peft_probabilities(llama, folder, ids, torch.ones_like(ids))
        fused = fuse(reference.numpy(), head.logit([texts[k]]))
        assert abs(float(fused[0]) - float(engine[k])) < 1e-5

    # retraining the same labels: the new version is evaluated against the current on the same records
    # (no min_f1 this time, so that the comparison with the current version decides; the adapter alone: a lexical
    # head would find the words by itself)
    again = train_questions([loaded(tmp_path, "is_bad", promotion=lenient)], labels, tmp_path / "reg", base=llama, gold_path=gold, progress=False,
                            **{**TINY, "epochs": 1, "learning_rate": 1e-6, "lexical_head": False})
    assert not again[0].decision.promoted and "worse than current v1" in again[0].decision.reason
    assert registry.current_version("is_bad") == 1


def test_real_minilm_adapter_loads_in_plain_peft_and_scores_the_same_in_the_engine(tmp_path):
    labels = write_labels(tmp_path / "labels", n=48)
    registry = Registry(tmp_path / "reg")
    version = train_question(loaded(tmp_path), labels, registry, progress=False, max_length=24, epochs=1,
                             batch_size=16, lexical_head=False)  # the adapter alone: what plain PEFT computes
    assert version.manifest["base_model_sha256"] and version.manifest["training"]["layers_to_transform"] == [5]
    registry.promote("is_bad", version.version)
    from assay.engine.batching import encode
    from assay.engine.scorer import Scorer

    texts = ["you are a stupid idiot", "thanks for the article edit"]
    scorer = Scorer.from_registry(registry)
    engine = scorer.score_texts(texts)["is_bad"]
    for k, text in enumerate(texts):
        ids = torch.tensor([encode(scorer.tokenizer, [text], 24).ids[0]])
        reference = peft_probabilities(minilm(), version.path, ids, torch.ones_like(ids))
        assert abs(float(reference[0]) - float(engine[k])) < 1e-5


def test_assay_train_cli_prints_a_summary_and_fails_clearly(llama, tmp_path):
    labels = write_labels(tmp_path / "labels", n=120, question_ids=("is_bad",))
    folder = tmp_path / "questions"
    folder.mkdir()
    for qid in ("is_bad", "threat"):
        (folder / f"{qid}.yaml").write_text(
            f"id: {qid}\nversion: 1\nquestion: Is it bad?\nsources:\n  - kind: rules\n    yes_keywords: [idiot]\n")
    runner = CliRunner()
    args = ["train", "--questions", str(folder), "--labels", str(labels), "--registry", str(tmp_path / "reg"),
            "--base", str(llama), "--epochs", "1", "--max-length", "32", "--top-layers", "1"]
    result = runner.invoke(app, args + ["--only", "is_bad"])
    assert result.exit_code == 0, result.output
    assert "is_bad" in result.output and "promoted" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "threat" in result.output and "no labels for question" in result.output
    result = runner.invoke(app, args + ["--only", "nope"])
    assert result.exit_code == 1 and "unknown question" in result.output


def test_a_rare_question_trains_with_a_warning_about_its_hold_out(llama, tmp_path):
    p_yes = np.zeros(100, np.float32)
    p_yes[:8] = 0.95
    labels = write_labels(tmp_path / "labels", n=100, p_yes=p_yes)
    version = train_question(loaded(tmp_path), labels, Registry(tmp_path / "reg"), base=llama, progress=False,
                             **{**TINY, "epochs": 1})
    assert version.manifest["training"]["holdout_records"] == 20
    assert "threshold and the held-out metrics are unreliable" in version.manifest["warnings"][0]


def test_degenerate_labels_train_but_are_never_promoted(llama, tmp_path):
    """The emotion-corpus failure: labels that say yes to nearly everything. All-yes labels cannot train at
    all; 95 % yes trains, measures its baseline, and is refused with what to do."""
    questions = [loaded(tmp_path, "is_bad")]
    everything = write_labels(tmp_path / "all", n=200, p_yes=np.full(200, 0.9, np.float32))
    result = train_questions(questions, everything, tmp_path / "reg", base=llama, progress=False, **TINY)[0]
    assert result.version is None and "0 record(s) with p_yes < 0.5" in result.error
    p_yes = np.full(200, 0.9, np.float32)
    p_yes[:10] = 0.1
    nearly = write_labels(tmp_path / "nearly", n=200, p_yes=p_yes)
    result = train_questions(questions, nearly, tmp_path / "reg", base=llama, progress=False, **TINY)[0]
    assert result.version is not None and not result.decision.promoted
    assert "degenerate labels — they say yes to 95.0% of the 200 seed records" in result.decision.reason
    baseline = result.version.manifest["metrics"]["holdout"]["baseline"]
    assert baseline["name"] == "tfidf_lr" and 0 <= baseline["f1"] <= 1 and "ece" in baseline
    assert Registry(tmp_path / "reg").current("is_bad") is None


def test_an_adapter_that_does_not_beat_tfidf_on_its_labels_is_refused(llama, tmp_path):
    """Labels a bag of words separates perfectly: TF-IDF + LR reaches held-out F1 near 1, so the tiny adapter
    (one epoch, learning rate too low to learn) cannot beat it, alone or fused with the lexical head, and stays
    unpromoted."""
    labels = write_labels(tmp_path / "labels", n=400)
    question = loaded(tmp_path, "is_bad", promotion={"min_holdout_positives": 5})
    for lexical_head in (False, True):  # the adapter alone, and fused with the head it does not improve on
        result = train_questions([question], labels, tmp_path / "reg", base=llama, progress=False,
                                 **{**TINY, "epochs": 1, "learning_rate": 1e-6, "lexical_head": lexical_head})[0]
        hold = result.version.manifest["metrics"]["holdout"]
        assert hold["baseline"]["f1"] > 0.9 and hold["f1"] <= hold["baseline"]["f1"], (lexical_head, hold)
        assert not result.decision.promoted and "does not beat tfidf_lr" in result.decision.reason
