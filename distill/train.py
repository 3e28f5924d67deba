"""Distil one LoRA adapter per question from probabilistic labels, on one shared base model.

Each question gets a PEFT LoRA adapter on the top ``top_layers`` transformer layers of a
sequence-classification base, the head trained too (``modules_to_save``). Training runs on the
soft labels (``p_yes``), with class weights against imbalance, a stratified hold-out for early
stopping and for the threshold, and fixed seeds. The threshold makes the held-out yes rate match the
label model's estimated prevalence (``threshold_rule="prevalence"``, the default) or maximises F1 on
the held-out soft labels (``"f1"``).
The lower layers' outputs are computed once for all questions (:mod:`assay.distill.cache`).
By default (``lexical_head``) the TF-IDF + LR model the promotion gate fits on the same labels is saved
beside the adapter and fused with it (:mod:`assay.engine.lexical`); the threshold and the held-out metrics
are the fused student's, and the gate compares it with that TF-IDF model alone.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model
from torch import nn
from tqdm.auto import tqdm

from assay.engine.lexical import LexicalHead, fuse
from assay.engine.model import architecture
from assay.labeling.metrics import f1_threshold
from assay.labeling.pipeline import read_question_summaries
from assay.schemas.loader import LoadedQuestion
from assay.schemas.registry import AdapterVersion, Registry, RegistryError, base_sha256

from .base import TrainConfig, first_adapted_layer, load_base, lora_config, make_cache, resolve_base
from .baselines import fit_lexical_head, tfidf_baseline
from .cache import LowerLayerCache, upper_layers_only
from .data import LabelsError, QuestionData, class_weights, load_question_data, read_seed, split_holdout
from .evaluate import (
    Decision,
    binary_metrics,
    evaluate_gold,
    prevalence_threshold,
    promote_if_better,
    reliability_plot,
)


@dataclass
class TrainResult:
    """What `assay train` did for one question."""

    question_id: str
    version: AdapterVersion | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    error: str | None = None
    seconds: float = 0.0


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


def _sources(loaded: LoadedQuestion, labels_dir: Path) -> dict[str, Any]:
    sources = {"spec": [{"name": s.name, "kind": s.kind, "weight": s.weight} for s in loaded.spec.sources]}
    summary = read_question_summaries(labels_dir).get(loaded.spec.id)
    if isinstance(summary, dict):
        sources["label_model"] = summary
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
        return f1_threshold(p_hold, soft_hold)
    raise ValueError(f"threshold_rule must be 'prevalence' or 'f1', not {rule!r}")


MIN_HOLDOUT_YES = 10


def _warnings(hold: QuestionData) -> list[str]:
    expected_yes = float(hold.p_yes.sum())
    if expected_yes < MIN_HOLDOUT_YES:
        return [f"only {expected_yes:.1f} expected yes records in the hold-out: the threshold and the held-out "
                "metrics are unreliable; label a larger or stratified seed set (assay label --stratify)"]
    return []


@dataclass
class _Fit:
    """The best epoch of one training run: its held-out loss, number, trainable weights, held-out scores."""

    loss: float
    epoch: int
    state: dict[str, torch.Tensor]
    p_hold: np.ndarray | None
    history: list[dict[str, float]]


def _epoch(model: nn.Module, feed, cache: LowerLayerCache, train: QuestionData, config: TrainConfig,
           optimizer: torch.optim.Optimizer, weights: tuple[float, float], rng: np.random.Generator,
           label: str, progress: bool) -> float:
    """One pass over the training records; returns the mean training loss."""
    model.train()
    p_train = torch.from_numpy(train.p_yes)
    bar = tqdm(_batches(train.texts, cache, config.batch_size, rng), desc=label, unit="batch", disable=not progress,
               leave=False)
    total = 0.0
    for index in bar:
        logits = _forward(model, feed, cache, [train.texts[i] for i in index], config.device)
        loss = distill_loss(logits, p_train[index].to(logits.device), weights, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total += value * len(index)
        bar.set_postfix(loss=f"{value:.4f}")
    bar.close()
    return total / len(train)


def _fit(model: nn.Module, cache: LowerLayerCache, train: QuestionData, hold: QuestionData, config: TrainConfig,
         weights: tuple[float, float], progress: bool) -> _Fit:
    """Train with early stopping on the held-out soft log loss; the model ends with the best epoch's weights."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    best = _Fit(math.inf, 0, _trainable_state(model), None, [])
    with upper_layers_only(model.base_model.model, cache.arch, cache.layer) as feed:
        for epoch in range(1, config.epochs + 1):
            train_loss = _epoch(model, feed, cache, train, config, optimizer, weights, rng,
                                f"{train.question_id} epoch {epoch}/{config.epochs}", progress)
            p_hold = _predict(model, feed, cache, hold.texts, config.device)
            held = _held_out_loss(p_hold, hold.p_yes)
            best.history.append({"epoch": epoch, "train_loss": train_loss, "holdout_loss": held})
            if held < best.loss:
                best = _Fit(held, epoch, _trainable_state(model), p_hold, best.history)
            elif epoch - best.epoch >= config.patience:
                break
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in best.state:
                param.copy_(best.state[name])
    return best


def holdout_baseline(head: LexicalHead, hold: QuestionData, prevalence: float) -> dict[str, Any]:
    """Held-out metrics of TF-IDF + logistic regression (the lexical head alone) on the same labels, same rule."""
    baseline = tfidf_baseline(head, hold, prevalence)
    return {"name": baseline.name, **binary_metrics(baseline.score(hold.texts), hold.label, baseline.threshold,
                                                    soft=hold.p_yes)}


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
    peft_model = get_peft_model(load_base(base, config), lora_config(cache.model, config))
    weights = class_weights(train.p_yes, config.class_weight)
    best = _fit(peft_model, cache, train, hold, config, weights, progress)
    prevalence = float(data.p_yes.mean())  # the label model's estimated share of yes records
    head = fit_lexical_head(train, hold, config.class_weight, config.seed)
    p_hold = fuse(best.p_hold, head.logit(hold.texts)) if config.lexical_head else best.p_hold
    threshold = choose_threshold(p_hold, hold.p_yes, prevalence, config.threshold_rule)
    holdout_metrics = {**binary_metrics(p_hold, hold.label, threshold, soft=hold.p_yes),
                       "baseline": holdout_baseline(head, hold, prevalence)}
    arch = architecture(cache.model)
    manifest = {
        "spec_version": loaded.spec.version, "question": loaded.spec.question,
        "base_model": str(base), "base_model_sha256": sha, "max_length": config.max_length, "threshold": threshold,
        "training": {**asdict(config), "target_modules": list(lora_config(cache.model, config).target_modules),
                     "layers_to_transform": list(range(cache.layer, arch.n_layers)), "labels_dir": str(labels_dir),
                     "records": len(train), "holdout_records": len(hold),
                     "train_positives": float(train.p_yes.sum()), "class_weights": list(weights),
                     "estimated_prevalence": prevalence, "yes_rate": float(data.label.mean()),
                     "best_epoch": best.epoch, "history": best.history, "cache_fill_seconds": round(cache_seconds, 2),
                     "seconds": round(time.perf_counter() - started, 2)},
        "sources": _sources(loaded, labels_dir),
        "metrics": {"holdout": holdout_metrics},
        "warnings": _warnings(hold),
    }
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        if config.lexical_head:
            head.save(Path(tmp))
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
