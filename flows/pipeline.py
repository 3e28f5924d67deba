"""Prefect flows for questions: ``label``, ``train``, ``evaluate_and_promote``, composed into ``onboard_question``.

Each flow runs one task per question. A run folder holds every step's output::

    RUN/labels/   the label run folder (seed.parquet, votes/, labels/, report/, summary.json; see assay.labeling)
    RUN/.done/<step>/<question>.json   what a finished step read and produced (see ``resume``)

A re-run skips the steps whose inputs have not changed (``fresh=True`` redoes them); the labeller
also reuses the seed sample, the embeddings and every source's votes it already has. The adapter
gold evaluation is cached by Prefect on the adapter version and the label/gold files, which never
change under a version. A promotion emits ``assay.adapter.promoted``; running consumers load the new
adapter on their next ``Scorer.reload()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from assay.flows import events
from assay.flows.resume import file_digest, fingerprint, finished, record
from assay.schemas import LoadedQuestion, load_questions, select
from assay.schemas.files import sha256_files
from assay.schemas.registry import Registry


def labels_dir(run_dir: str | Path) -> Path:
    """The label run folder inside a flow run folder (shared by the questions: one seed set, one embedding cache)."""
    return Path(run_dir) / "labels"


def spec_digest(question: LoadedQuestion) -> str:
    """Hash of a question's validated spec (formatting and comments in the YAML do not count)."""
    return fingerprint(question.spec.model_dump(mode="json"))


def _questions(questions: str, only: str | None) -> list[LoadedQuestion]:
    return select(load_questions(questions), only)


def _optional_digest(path: str | None) -> str | None:
    return file_digest(path) if path else None


# ---- label ------------------------------------------------------------------------------------
@task(name="label-question", retries=2, retry_delay_seconds=30, cache_policy=NO_CACHE,
      task_run_name="label {question.spec.id}")
def label_question(question: LoadedQuestion, records: str, run_dir: str, sample: int | None = 4000, seed: int = 0,
                   budget_usd: float | None = None, fresh: bool = False) -> dict[str, Any]:
    """Label one question's seed set with its sources and combine the votes (``assay.labeling``)."""
    from dataclasses import asdict

    from assay.labeling.pipeline import label_questions

    logger = get_run_logger()
    qid, out = question.spec.id, labels_dir(run_dir)
    key = fingerprint(spec_digest(question), file_digest(records), sample, seed, budget_usd)
    if not fresh and (done := finished(run_dir, "label", qid, key)) is not None:
        logger.info("%s: labels in %s are up to date (inputs unchanged), not relabelling", qid, out)
        return done
    run = label_questions([question], records, out, sample=sample, seed=seed, budget_usd=budget_usd, progress=False)
    summary = asdict(run.questions[qid])
    for name, teacher in summary["teachers"].items():
        if teacher.get("budget_exhausted"):
            events.emit(events.BUDGET_EXHAUSTED, events.question_resource(qid),
                        {"question_id": qid, "source": name, "label_dir": str(out), **teacher}, name=qid)
            logger.warning("%s: %s ran out of budget; the records after it have the other sources' votes only",
                           qid, name)
    logger.info("%s: %s labels (%s), yes rate %.3f", qid, f"{run.seed_rows:,}", summary["method"],
                summary["yes_rate"])
    result = {"question_id": qid, "seed_rows": run.seed_rows, "rejected_rows": run.rejected_rows,
              "input": run.input, "summary": summary}
    return record(run_dir, "label", qid, key, result, [out / "labels" / f"{qid}.parquet"])


def write_label_summary(run_dir: str | Path, results: dict[str, dict[str, Any]], seconds: float) -> None:
    """One ``summary.json`` and report index for all questions of the run (each task wrote only its own)."""
    from assay.labeling.pipeline import LabelRunSummary, QuestionSummary, write_summary

    first = next(iter(results.values()))
    write_summary(LabelRunSummary(str(labels_dir(run_dir)), first["input"], first["seed_rows"], first["rejected_rows"],
                                  round(seconds, 2), {qid: QuestionSummary(**r["summary"]) for qid, r in results.items()}))


@flow(name="label")
def label(questions: str, records: str, run_dir: str, only: str | None = None, sample: int | None = 4000,
          seed: int = 0, budget_usd: float | None = None, fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Label a seed sample of ``records`` for each question in ``questions`` (folder or file)."""
    started = time.perf_counter()
    results = {q.spec.id: label_question(q, records, run_dir, sample, seed, budget_usd, fresh)
               for q in _questions(questions, only)}
    write_label_summary(run_dir, results, time.perf_counter() - started)
    return results


# ---- train ------------------------------------------------------------------------------------
@task(name="train-question", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE,
      task_run_name="train {question.spec.id}")
def train_question(question: LoadedQuestion, run_dir: str, registry: str, base: str | None = None,
                   fresh: bool = False, cache: Any = None) -> dict[str, Any]:
    """Distil one question's labels into a new adapter version in the registry (saved, not promoted).

    ``cache`` is the lower-layer cache shared by the questions of one flow run (``distill.cache``).
    """
    from assay.distill import train as distill
    from assay.distill.data import LabelsError
    from assay.schemas.registry import RegistryError

    logger = get_run_logger()
    qid = question.spec.id
    labels = labels_dir(run_dir)
    key = fingerprint(spec_digest(question), file_digest(labels / "labels" / f"{qid}.parquet"), base,
                      str(Path(registry).resolve()))
    reg = Registry(registry)
    if not fresh and (done := finished(run_dir, "train", qid, key)) is not None:
        try:
            reg.get(qid, done["version"])
            logger.info("%s: v%s was trained on these labels already, not retraining", qid, done["version"])
            return done
        except RegistryError:
            logger.info("%s: v%s is gone from the registry, training again", qid, done["version"])
    try:
        version = distill.train_question(question, labels, reg, base=base, progress=False, cache=cache)
    except LabelsError as error:  # labels that cannot train a classifier: say why, let the others train
        logger.error("%s: not trained — %s", qid, error)
        return {"question_id": qid, "version": None, "error": str(error)}
    holdout = version.metrics.get("holdout", {})
    logger.info("%s: trained v%s (held-out F1 %.3f) → %s", qid, version.version, holdout.get("f1", float("nan")),
                version.path)
    result = {"question_id": qid, "version": version.version, "path": str(version.path)}
    return record(run_dir, "train", qid, key, result, [version.path])


@flow(name="train")
def train(questions: str, run_dir: str, registry: str, only: str | None = None, base: str | None = None,
          fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Train a new adapter version per question from the labels of ``label`` in the same ``run_dir``."""
    from assay.distill.train import TrainConfig, make_cache, resolve_base

    loaded = _questions(questions, only)
    first = loaded[0]
    cache = make_cache(resolve_base(first, base), TrainConfig.for_spec(first))  # questions on other settings make their own
    return {q.spec.id: train_question(q, run_dir, registry, base, fresh, cache) for q in loaded}


# ---- evaluate and promote ---------------------------------------------------------------------
def _evaluation_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The metrics depend on the adapter version's own files (a registry made again in the same folder reuses
    version numbers for other adapters), its threshold and held-out metrics, and the data."""
    labels = labels_dir(parameters["run_dir"]) / "labels" / f"{parameters['question_id']}.parquet"
    saved = Registry(parameters["registry"]).get(parameters["question_id"], parameters["version"])
    files = sorted(p for p in saved.path.iterdir() if p.is_file() and p.name != "manifest.json")
    return fingerprint("evaluate", str(Path(parameters["registry"]).resolve()), parameters["question_id"],
                       parameters["version"], sha256_files(saved.path, files), saved.threshold,
                       saved.metrics.get("holdout"), file_digest(labels), _optional_digest(parameters["gold"]))


@task(name="evaluate-adapter", cache_key_fn=_evaluation_key, persist_result=True,
      task_run_name="evaluate {question_id} v{version}")
def evaluate_adapter(registry: str, question_id: str, version: int, run_dir: str,
                     gold: str | None = None) -> dict[str, Any]:
    """Metrics of one adapter version: on its held-out labels (measured when it was trained) and on gold."""
    from assay.distill.evaluate import evaluate

    reg = Registry(registry)
    saved = reg.get(question_id, version)
    metrics = dict(saved.metrics)
    if gold:
        metrics["gold"] = {**evaluate(saved, None, gold_path=gold)["gold"], "path": str(gold)}
        reg.update_manifest(saved, metrics=metrics)  # `assay registry list` shows them
    if not metrics:
        raise ValueError(f"{saved.path}: no held-out metrics in the manifest and no gold file to evaluate on")
    return metrics


@task(name="promote-if-better", task_run_name="promote {question.spec.id} v{version}?")
def promote_if_better(question: LoadedQuestion, registry: str, version: int,
                      metrics: dict[str, Any]) -> dict[str, Any]:
    """Promote the version when it passes the question's bar and beats the current one; emit the event."""
    from assay.distill.evaluate import promote_if_better as decide

    reg = Registry(registry)
    qid = question.spec.id
    logger = get_run_logger()
    result = {"question_id": qid, "version": version, "metrics": metrics}
    if reg.current_version(qid) == version:
        logger.info("%s: v%s is already current", qid, version)
        return {**result, "promoted": False, "current": True, "reason": f"v{version} is already current"}
    decision = decide(reg, reg.get(qid, version), metrics, question.spec)
    if decision.promoted:
        events.adapter_promoted(qid, version, str(Path(registry).resolve()), decision.reason)
    logger.info("%s: v%s — %s", qid, version, decision.reason)
    return {**result, "promoted": decision.promoted, "current": decision.promoted, "reason": decision.reason}


@flow(name="evaluate-and-promote")
def evaluate_and_promote(questions: str, run_dir: str, registry: str, versions: dict[str, int] | None = None,
                         only: str | None = None, gold: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate each question's newest adapter version and promote the ones that pass.

    With ``versions`` ({question: version}), only the questions named there, at those versions.
    """
    reg = Registry(registry)
    decisions = {}
    for question in _questions(questions, only):
        qid = question.spec.id
        if versions is not None and qid not in versions:
            continue
        saved = reg.versions(qid)
        if not saved:
            get_run_logger().warning("%s: no adapter version in %s yet; run the train flow first", qid, registry)
            continue
        version = (versions or {}).get(qid, saved[-1].version)
        metrics = evaluate_adapter(registry, qid, version, run_dir, gold)
        decisions[qid] = promote_if_better(question, registry, version, metrics)
    return decisions


# ---- onboarding -------------------------------------------------------------------------------
@flow(name="onboard-question")
def onboard_question(question_file: str, records: str, registry: str, run_dir: str, gold: str | None = None,
                     sample: int | None = 4000, seed: int = 0, budget_usd: float | None = None,
                     fresh: bool = False) -> dict[str, Any]:
    """One new or changed question file: label it, train it, evaluate it and promote it if it passes."""
    qid = load_questions(question_file)[0].spec.id
    labelled = label(question_file, records, run_dir, sample=sample, seed=seed, budget_usd=budget_usd, fresh=fresh)
    trained = train(question_file, run_dir, registry, fresh=fresh)
    result = {"question_id": qid, "label": labelled[qid], "train": trained[qid]}
    if trained[qid]["version"] is None:
        return {**result, "decision": {"promoted": False, "current": False,
                                       "reason": f"not trained: {trained[qid]['error']}"}}
    decided = evaluate_and_promote(question_file, run_dir, registry, versions={qid: trained[qid]["version"]},
                                   gold=gold)
    return {**result, "decision": decided[qid]}
