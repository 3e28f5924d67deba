"""Distil one LoRA adapter per question from probabilistic labels, on one shared base model.

Each question gets a PEFT LoRA adapter on the top ``top_layers`` transformer layers of a
sequence-classification base, the head trained too (``modules_to_save``). Training runs on the
soft labels (``p_yes``), with class weights against imbalance, a stratified hold-out for early
stopping and for the threshold, and fixed seeds. The threshold makes the held-out yes rate match the
label model's estimated prevalence (``threshold_rule="prevalence"``, the default) or maximises F1 on
the held-out soft labels (``"f1"``).
The lower layers' outputs are computed once for all questions (:mod:`assay.distill.cache`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from assay.engine.model import architecture
from assay.schemas.models import bundled_minilm
from assay.schemas.loader import LoadedQuestion

from .cache import LowerLayerCache, upper_layers_only
from .data import LabelsError, QuestionData, load_question_data, read_seed, split_holdout
from .evaluate import (Decision, binary_metrics, evaluate_gold, prevalence_threshold, promote_if_better,
                       reliability_plot, soft_f1_threshold)
from assay.schemas.registry import AdapterVersion, Registry, RegistryError, base_sha256


@dataclass(frozen=True)
class TrainConfig:
    """Distillation settings; defaults chosen from the measurements in docs/QUALITY.md and PERFORMANCE.md."""

    top_layers: int = 1
    max_length: int = 128
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    lora_rank: int = 8
    lora_alpha: float | None = None  # default 2 x rank
    target_modules: tuple[str, ...] | None = None  # default: every nn.Linear inside a transformer layer
    loss: Literal["soft", "confidence"] = "soft"
    class_weight: Literal["balanced", "sqrt", "none"] = "sqrt"
    holdout: float = 0.2
    threshold_rule: Literal["prevalence", "f1"] = "prevalence"
    patience: int = 1
    seed: int = 0
    device: str = "cpu"
    quantize_4bit: bool | None = None  # None: on for CUDA bases over 2 GiB (QLoRA)
    threads: int | None = None

    @classmethod
    def for_spec(cls, loaded: LoadedQuestion, **overrides: Any) -> "TrainConfig":
        """Defaults, then the question's ``training:`` block, then explicit overrides (None = unset)."""
        training = loaded.spec.training
        values: dict[str, Any] = {"lora_rank": training.lora_rank, "lora_alpha": training.lora_alpha,
                                  "top_layers": training.top_layers, "epochs": training.epochs,
                                  "learning_rate": training.learning_rate,
                                  "target_modules": tuple(training.target_modules) if training.target_modules else None}
        values = {k: v for k, v in values.items() if v is not None}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("target_modules"), list):
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)


@dataclass
class TrainResult:
    """What `assay train` did for one question."""

    question_id: str
    version: AdapterVersion | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    error: str | None = None
    seconds: float = 0.0


def resolve_base(loaded: LoadedQuestion, base: str | Path | None) -> Path:
    """``base`` if given, else the spec's ``training.base_model`` (relative to the question file), else MiniLM."""
    if base is not None:
        return Path(base)
    named = loaded.spec.training.base_model
    if named:
        relative = Path(loaded.path).parent / named
        return relative if relative.exists() else Path(named)
    return bundled_minilm()


def quantization_config(config: TrainConfig, weight_bytes: int = 0):
    """QLoRA: a 4-bit NF4 ``BitsAndBytesConfig`` (bf16 compute, double quantisation) on CUDA, else None.

    ``quantize_4bit=None`` turns it on for CUDA bases of more than 2 GiB of weights (decoder LLMs).
    """
    wanted = config.quantize_4bit if config.quantize_4bit is not None else (
        config.device == "cuda" and weight_bytes > QLORA_AUTO_BYTES)
    if not wanted:
        return None
    if config.device != "cuda":
        raise ValueError("4-bit QLoRA needs a CUDA device (bitsandbytes); use device='cuda' or quantize_4bit=False")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


QLORA_AUTO_BYTES = 2 * 1024**3  # on CUDA, bases with more weight bytes than this train as 4-bit QLoRA


def _weight_bytes(base: Path) -> int:
    return sum(p.stat().st_size for p in Path(base).glob("*") if p.suffix in (".safetensors", ".bin"))


def load_base(base: Path, config: TrainConfig) -> nn.Module:
    """The base as a 2-label sequence classifier: fp32, or 4-bit NF4 with bf16 compute for QLoRA on CUDA."""
    quant = quantization_config(config, _weight_bytes(base))
    kwargs: dict[str, Any] = {"num_labels": 2}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": 0}, dtype=torch.bfloat16)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the fresh head is expected: no "MISSING" load report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif config.device != "cpu":
        model = model.to(config.device)
    return model


def first_adapted_layer(n_layers: int, config: TrainConfig) -> int:
    """Index of the lowest layer the adapter touches: everything below it is shared and cached."""
    return n_layers - min(config.top_layers, n_layers)


def lora_config(model: nn.Module, config: TrainConfig) -> LoraConfig:
    """LoRA on the top ``top_layers`` layers' linears, the classification head trained in full."""
    arch = architecture(model)
    targets = config.target_modules or sorted({name.rsplit(".", 1)[-1] for name, module in arch.stages[0].named_modules()
                                               if isinstance(module, nn.Linear)})
    layers = list(range(first_adapted_layer(arch.n_layers, config), arch.n_layers))
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_rank, lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                      lora_dropout=0.0, target_modules=list(targets), layers_to_transform=layers,
                      layers_pattern=arch.layers_path.rsplit(".", 1)[-1], modules_to_save=[arch.head_name])


def class_weights(p_yes: np.ndarray, mode: str) -> tuple[float, float]:
    """(weight of 'no', weight of 'yes'): balanced = 1/(2 prior), sqrt = its square root, none = 1."""
    prior = float(np.clip(p_yes.mean(), 1e-3, 1 - 1e-3))
    balanced = (0.5 / (1 - prior), 0.5 / prior)
    if mode == "balanced":
        return balanced
    if mode == "sqrt":
        return math.sqrt(balanced[0]), math.sqrt(balanced[1])
    return 1.0, 1.0


def distill_loss(logits: torch.Tensor, p_yes: torch.Tensor, weights: tuple[float, float], mode: str) -> torch.Tensor:
    """Soft-target cross-entropy on P(yes), or hard-label CE weighted by confidence |2p-1|; class-weighted."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    if mode == "soft":
        per = -(weights[1] * p_yes * logp[:, 1] + weights[0] * (1 - p_yes) * logp[:, 0])
    else:
        yes = p_yes >= 0.5
        weight = (2 * p_yes - 1).abs() * torch.where(yes, weights[1], weights[0])
        per = -weight * torch.where(yes, logp[:, 1], logp[:, 0])
    return per.mean()


def _batches(texts: Sequence[str], cache: LowerLayerCache, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: random order, sorted within windows of 50 batches."""
    order = rng.permutation(len(texts))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(cache.tokens(texts[i])))
        batches += [np.array(chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _forward(model: nn.Module, feed, cache: LowerLayerCache, texts: Sequence[str], device: str) -> torch.Tensor:
    batch = cache.batch(texts)
    feed.value = batch.hidden.to(device=device, dtype=next(p for p in model.parameters() if p.is_floating_point()).dtype)
    try:
        return model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    finally:
        feed.value = None


def _predict(model: nn.Module, feed, cache: LowerLayerCache, texts: Sequence[str], device: str,
             batch_size: int = 64) -> np.ndarray:
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(cache.tokens(texts[i])))
    out = np.empty(len(texts), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            logits = _forward(model, feed, cache, [texts[i] for i in index], device)
            out[index] = torch.softmax(logits.float(), -1)[:, 1].cpu().numpy()
    return out


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _held_out_loss(p: np.ndarray, target: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())


def make_cache(base: Path, config: TrainConfig, sha: str | None = None) -> LowerLayerCache:
    """A lower-layer cache for ``base`` at the first adapted layer of ``config`` (its own model instance)."""
    model = load_base(base, config)
    layer = first_adapted_layer(architecture(model).n_layers, config)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return LowerLayerCache(model, tokenizer, config.max_length, layer, sha or base_sha256(base), device=config.device)


def _sources(loaded: LoadedQuestion, labels_dir: Path) -> dict[str, Any]:
    sources = {"spec": [{"name": s.name, "kind": s.kind, "weight": s.weight} for s in loaded.spec.sources]}
    summary = labels_dir / "summary.json"
    if summary.is_file():
        try:
            run = json.loads(summary.read_text())
            questions = run.get("questions", run) if isinstance(run, dict) else {}
            if isinstance(questions, dict) and isinstance(questions.get(loaded.spec.id), dict):
                sources["label_model"] = questions[loaded.spec.id]
        except (OSError, json.JSONDecodeError):
            pass
    return sources


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: leave as is), restoring the count after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_question(loaded: LoadedQuestion, labels_dir: str | Path, registry: Registry, base: str | Path | None = None,
                   progress: bool = True, *, cache: LowerLayerCache | None = None, data: QuestionData | None = None,
                   **overrides: Any) -> AdapterVersion:
    """Train one question's adapter on its label run and save it to the registry (not promoted).

    ``cache`` shares the lower layers across questions (made here when not given); ``overrides`` are
    :class:`TrainConfig` fields. The manifest carries the held-out metrics and the chosen threshold.
    """
    started = time.perf_counter()
    config = TrainConfig.for_spec(loaded, **overrides)
    with torch_threads(config.threads):
        return _train_question(loaded, Path(labels_dir), registry, resolve_base(loaded, base), config, progress,
                               cache, data, started)


def choose_threshold(p_hold: np.ndarray, soft_hold: np.ndarray, prevalence: float, rule: str) -> float:
    """The decision threshold on held-out scores ``p_hold``.

    ``prevalence``: say yes to the label model's estimated share of yes records (mean ``p_yes`` over all
    labelled seed records) — it needs the ranking only, so a hold-out with a handful of yes records does
    not make it collapse. ``f1``: maximise F1 against the held-out soft labels ``soft_hold``.
    """
    if rule == "prevalence":
        return prevalence_threshold(p_hold, prevalence)
    if rule == "f1":
        return soft_f1_threshold(p_hold, soft_hold)
    raise ValueError(f"threshold_rule must be 'prevalence' or 'f1', not {rule!r}")


MIN_HOLDOUT_YES = 10


def _warnings(hold: QuestionData) -> list[str]:
    expected_yes = float(hold.p_yes.sum())
    if expected_yes < MIN_HOLDOUT_YES:
        return [f"only {expected_yes:.1f} expected yes records in the hold-out: the threshold and the held-out "
                "metrics are unreliable; label a larger or stratified seed set (assay label --stratify)"]
    return []


def _train_question(loaded: LoadedQuestion, labels_dir: Path, registry: Registry, base: Path, config: TrainConfig,
                    progress: bool, cache: LowerLayerCache | None, data: QuestionData | None,
                    started: float) -> AdapterVersion:
    qid = loaded.spec.id
    data = data if data is not None else load_question_data(labels_dir, qid)
    sha = base_sha256(base)
    if cache is None or cache.key != (sha, config.max_length, first_adapted_layer(cache.arch.n_layers, config)):
        cache = make_cache(base, config, sha)  # none given, or one for another base / length / layer
    cache_seconds = cache.fill(data.texts, progress=progress)

    train_index, hold_index = split_holdout(data, config.holdout, config.seed)
    train, hold = data.subset(train_index), data.subset(hold_index)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    peft_model = get_peft_model(load_base(base, config), lora_config(cache.model, config))
    weights = class_weights(train.p_yes, config.class_weight)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    p_train = torch.from_numpy(train.p_yes)
    best = (math.inf, 0, _trainable_state(peft_model), None)
    history = []
    with upper_layers_only(peft_model.base_model.model, cache.arch, cache.layer) as feed:
        for epoch in range(1, config.epochs + 1):
            peft_model.train()
            batches = _batches(train.texts, cache, config.batch_size, rng)
            bar = tqdm(batches, desc=f"{qid} epoch {epoch}/{config.epochs}", unit="batch", disable=not progress,
                       leave=False)
            total = 0.0
            for index in bar:
                logits = _forward(peft_model, feed, cache, [train.texts[i] for i in index], config.device)
                loss = distill_loss(logits, p_train[index].to(logits.device), weights, config.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                total += value * len(index)
                bar.set_postfix(loss=f"{value:.4f}")
            bar.close()
            p_hold = _predict(peft_model, feed, cache, hold.texts, config.device)
            held = _held_out_loss(p_hold, hold.p_yes)
            history.append({"epoch": epoch, "train_loss": total / len(train), "holdout_loss": held})
            if held < best[0]:
                best = (held, epoch, _trainable_state(peft_model), p_hold)
            elif epoch - best[1] >= config.patience:
                break
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if name in best[2]:
                param.copy_(best[2][name])
    p_hold = best[3]
    prevalence = float(data.p_yes.mean())  # the label model's estimated share of yes records
    threshold = choose_threshold(p_hold, hold.p_yes, prevalence, config.threshold_rule)
    holdout_metrics = binary_metrics(p_hold, hold.label, threshold, soft=hold.p_yes)
    arch = architecture(cache.model)
    manifest = {
        "spec_version": loaded.spec.version,
        "question": loaded.spec.question,
        "base_model": str(base),
        "base_model_sha256": sha,
        "max_length": config.max_length,
        "threshold": threshold,
        "training": {**asdict(config), "target_modules": list(lora_config(cache.model, config).target_modules),
                     "layers_to_transform": list(range(cache.layer, arch.n_layers)), "labels_dir": str(labels_dir),
                     "records": len(train), "holdout_records": len(hold),
                     "train_positives": float(train.p_yes.sum()), "class_weights": list(weights),
                     "estimated_prevalence": prevalence,
                     "best_epoch": best[1], "history": history, "cache_fill_seconds": round(cache_seconds, 2),
                     "seconds": round(time.perf_counter() - started, 2)},
        "sources": _sources(loaded, labels_dir),
        "metrics": {"holdout": holdout_metrics},
        "warnings": _warnings(hold),
    }
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        (Path(tmp) / "holdout_ids.json").write_text(json.dumps(hold.ids))
        reliability_plot(p_hold, hold.label.astype(np.float64), Path(tmp) / "reliability.png",
                         f"{qid} — held-out seed records (n={len(hold)})")
        return registry.save(qid, tmp, manifest)


def train_questions(questions: Sequence[LoadedQuestion], labels_dir: str | Path, registry_dir: str | Path,
                    base: str | Path | None = None, gold_path: str | Path | None = None,
                    only: Sequence[str] | None = None, progress: bool = True, **overrides: Any) -> list[TrainResult]:
    """Train, evaluate and (when good enough) promote an adapter for each question; what `assay train` runs.

    Questions on the same base share one lower-layer cache. A question whose labels are unusable gets
    a :class:`TrainResult` with ``error`` set; the others still train.
    """
    with torch_threads(overrides.get("threads")):
        return _train_questions(questions, Path(labels_dir), Registry(registry_dir), base, gold_path, only, progress,
                                overrides)


def _train_questions(questions: Sequence[LoadedQuestion], labels_dir: Path, registry: Registry,
                     base: str | Path | None, gold_path: str | Path | None, only: Sequence[str] | None,
                     progress: bool, overrides: dict[str, Any]) -> list[TrainResult]:
    known = {q.spec.id: q for q in questions}
    if only:
        missing = [q for q in only if q not in known]
        if missing:
            raise KeyError(f"--only names unknown question(s): {', '.join(missing)} (known: {', '.join(sorted(known))})")
        questions = [known[q] for q in only]
    seed = read_seed(labels_dir)
    caches: dict[tuple, LowerLayerCache] = {}
    results = []
    for loaded in questions:
        started = time.perf_counter()
        result = TrainResult(loaded.spec.id)
        try:
            data = load_question_data(labels_dir, loaded.spec.id, seed=seed)
            config = TrainConfig.for_spec(loaded, **overrides)
            question_base = resolve_base(loaded, base)
            key = (str(question_base.resolve()), config.max_length, config.top_layers, config.device)
            if key not in caches:
                caches[key] = make_cache(question_base, config)
            result.version = train_question(loaded, labels_dir, registry, question_base, progress,
                                            cache=caches[key], data=data, **overrides)
        except (LabelsError, RegistryError) as error:
            result.error = str(error)
        result.seconds = time.perf_counter() - started
        results.append(result)
    trained = [r for r in results if r.version is not None]
    gold = evaluate_gold([r.version for r in trained], gold_path, registry, progress=progress) if gold_path else {}
    by_id = {loaded.spec.id: loaded for loaded in questions}
    for result in trained:
        version = result.version
        result.metrics = {**version.metrics, **gold.get(version.question_id, {})}
        version = registry.update_manifest(version, metrics=result.metrics)
        result.decision = promote_if_better(registry, version, result.metrics, by_id[version.question_id].spec,
                                            labels_dir=labels_dir, gold_path=gold_path)
        result.version = registry.update_manifest(version, decision=result.decision.reason)
    return results
