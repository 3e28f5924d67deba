"""Prefect flows for questions: ``label``, ``train``, ``evaluate_and_promote``, composed into ``onboard_question``.

Each flow runs one task per question. A run folder holds every step's output::

    RUN/labels/<question>/   the label run folder of that question (seed, votes, labels, report, summary.json)
    RUN/.done/<step>/<question>.json   what a finished step read and produced (see ``resume``)

A re-run skips the steps whose inputs have not changed (``fresh=True`` redoes them); the adapter
evaluation is cached by Prefect on the adapter version and the label/gold files, which never change
under a version. A promotion emits ``assay.adapter.promoted``; running consumers load the new
adapter on their next ``Scorer.reload()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from assay.flows import events
from assay.flows.resume import file_digest, fingerprint, finished, record
from assay.schemas import LoadedQuestion, load_questions, select


def label_dir(run_dir: str | Path, question_id: str) -> Path:
    """The label run folder of one question inside a flow run folder."""
    return Path(run_dir) / "labels" / question_id


def spec_digest(question: LoadedQuestion) -> str:
    """Hash of a question's validated spec (formatting and comments in the YAML do not count)."""
    return fingerprint(question.spec.model_dump(mode="json"))


def _questions(questions: str, only: str | None) -> list[LoadedQuestion]:
    return select(load_questions(questions), only)


def _optional_digest(path: str | None) -> str | None:
    return file_digest(path) if path else None


# ---- label ------------------------------------------------------------------------------------
@task(name="label-question", retries=2, retry_delay_seconds=30, task_run_name="label {question.spec.id}")
def label_question(question: LoadedQuestion, records: str, run_dir: str, sample: int | None = 4000, seed: int = 0,
                   gold: str | None = None, budget_usd: float | None = None, fresh: bool = False) -> dict[str, Any]:
    """Label one question's seed set with its sources and combine the votes (``assay.labeling``)."""
    from assay.labeling.pipeline import label_questions

    logger = get_run_logger()
    qid = question.spec.id
    key = fingerprint(spec_digest(question), file_digest(records), sample, seed, _optional_digest(gold), budget_usd)
    out = label_dir(run_dir, qid)
    if not fresh and (done := finished(run_dir, "label", qid, key)) is not None:
        logger.info("%s: labels are up to date in %s (inputs unchanged), not relabelling", qid, out)
        return done
    label_questions([question], records, out, sample=sample, seed=seed, gold_path=gold, budget_usd=budget_usd,
                    progress=False)
    summary = json.loads((out / "summary.json").read_text())
    result = {"question_id": qid, "label_dir": str(out), "summary": summary}
    llm = _llm_totals(summary)
    if llm.get("budget_exhausted"):
        events.emit(events.BUDGET_EXHAUSTED, events.question_resource(qid),
                    {"question_id": qid, "label_dir": str(out), "budget_usd": budget_usd, **llm}, name=qid)
        logger.warning("%s: the LLM budget ran out; records past it were labelled by the other sources only", qid)
    logger.info("%s: labelled in %s", qid, out)
    return record(run_dir, "label", qid, key, result, [out / "labels" / f"{qid}.parquet"])


def _llm_totals(summary: dict[str, Any]) -> dict[str, Any]:
    """The LLM cost block of a label summary, whatever question key it sits under."""
    for value in summary.values() if isinstance(summary, dict) else []:
        if isinstance(value, dict):
            llm = value.get("llm") or {}
            if llm:
                return llm
    return dict(summary.get("llm") or {}) if isinstance(summary, dict) else {}


@flow(name="label")
def label(questions: str, records: str, run_dir: str, only: str | None = None, sample: int | None = 4000,
          seed: int = 0, gold: str | None = None, budget_usd: float | None = None,
          fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Label a seed sample of ``records`` for each question in ``questions`` (folder or file)."""
    return {q.spec.id: label_question(q, records, run_dir, sample, seed, gold, budget_usd, fresh)
            for q in _questions(questions, only)}


# ---- train ------------------------------------------------------------------------------------
@task(name="train-question", retries=1, retry_delay_seconds=10, task_run_name="train {question.spec.id}")
def train_question(question: LoadedQuestion, run_dir: str, registry: str, base: str | None = None,
                   fresh: bool = False) -> dict[str, Any]:
    """Distil one question's labels into a new adapter version in the registry (saved, not promoted)."""
    from assay.distill import train as distill_train
    from assay.distill.registry import Registry, RegistryError

    logger = get_run_logger()
    qid = question.spec.id
    labels = label_dir(run_dir, qid)
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
    version = distill_train.train_question(question, labels, reg, base=base, progress=False)
    logger.info("%s: trained v%s → %s", qid, version.version, version.path)
    result = {"question_id": qid, "version": version.version, "path": str(version.path)}
    return record(run_dir, "train", qid, key, result, [version.path])


@flow(name="train")
def train(questions: str, run_dir: str, registry: str, only: str | None = None, base: str | None = None,
          fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Train a new adapter version per question from the labels of ``label`` in the same ``run_dir``."""
    return {q.spec.id: train_question(q, run_dir, registry, base, fresh) for q in _questions(questions, only)}


# ---- evaluate and promote ---------------------------------------------------------------------
def _evaluation_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Adapter versions never change once saved: the metrics depend only on the version and the data."""
    labels = label_dir(parameters["run_dir"], parameters["question_id"])
    return fingerprint("evaluate", str(Path(parameters["registry"]).resolve()), parameters["question_id"],
                       parameters["version"], file_digest(labels / "labels"), _optional_digest(parameters["gold"]))


@task(name="evaluate-adapter", cache_key_fn=_evaluation_key, persist_result=True,
      task_run_name="evaluate {question_id} v{version}")
def evaluate_adapter(registry: str, question_id: str, version: int, run_dir: str,
                     gold: str | None = None) -> dict[str, Any]:
    """Metrics of one adapter version on the held-out labels (and on gold when given)."""
    from assay.distill.evaluate import evaluate
    from assay.distill.registry import Registry

    return evaluate(Registry(registry).get(question_id, version), label_dir(run_dir, question_id), gold_path=gold)


@task(name="promote-if-better", task_run_name="promote {question.spec.id} v{version}?")
def promote_if_better(question: LoadedQuestion, registry: str, version: int,
                      metrics: dict[str, Any]) -> dict[str, Any]:
    """Promote the version when it passes the question's bar and beats the current one; emit the event."""
    from assay.distill.evaluate import promote_if_better as decide
    from assay.distill.registry import Registry

    reg = Registry(registry)
    qid = question.spec.id
    decision = decide(reg, reg.get(qid, version), metrics, question.spec)
    logger = get_run_logger()
    if decision.promoted:
        events.adapter_promoted(qid, version, str(Path(registry).resolve()), decision.reason)
        logger.info("%s: v%s promoted — %s", qid, version, decision.reason)
    else:
        logger.info("%s: v%s not promoted — %s", qid, version, decision.reason)
    return {"question_id": qid, "version": version, "promoted": bool(decision.promoted), "reason": decision.reason,
            "metrics": metrics}


@flow(name="evaluate-and-promote")
def evaluate_and_promote(questions: str, run_dir: str, registry: str, versions: dict[str, int] | None = None,
                         only: str | None = None, gold: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate each question's newest (or the given) adapter version and promote the ones that pass."""
    from assay.distill.registry import Registry

    reg = Registry(registry)
    decisions = {}
    for question in _questions(questions, only):
        qid = question.spec.id
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
    labelled = label(question_file, records, run_dir, sample=sample, seed=seed, gold=gold, budget_usd=budget_usd,
                     fresh=fresh)
    trained = train(question_file, run_dir, registry, fresh=fresh)
    decided = evaluate_and_promote(question_file, run_dir, registry, versions={qid: trained[qid]["version"]},
                                   gold=gold)
    return {"question_id": qid, "label": labelled[qid], "train": trained[qid], "decision": decided[qid]}
