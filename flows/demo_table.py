"""The demo's one table: every way of answering the questions, on the SAME dev records, against dev's gold.

Per question, F1 of the yes class on all dev records for: each labelling source alone (an abstain counts
as no), majority vote of the sources, the combined labels (the label model over the dev records' own
votes, with its own estimate of dev's class balance: a question's ``expected_yes_rate`` is the rate of the
seed it was read from, and dev is not toxic-enriched), the student adapter, the baselines trained on the
same seed labels (TF-IDF + LR, MiniLM embeddings + LR; :mod:`assay.distill.baselines`), and the cascade
(the least sure share of records sent to the recorded teacher). Beside it: the student against each
recorded teacher on the records that teacher answered, and records/s and cost per 1,000 records for teacher
and student.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assay.labeling.gold import gold_labels, gold_rows
from assay.labeling.metrics import binary_scores
from assay.labeling.model.combine import combine

CPU_USD_PER_CORE_HOUR = 0.05  # on-demand cloud vCPU-hour, order of magnitude (stated in the report)
TEACHER_PRICE_MODEL = "gpt-4-turbo"  # the recorded answers come from gpt-4-1106-preview, a GPT-4 Turbo
TEACHER_OUTPUT_TOKENS = 2  # "yes" / "no"


def _gold(path: Path, qid: str, ids: list[str]) -> np.ndarray:
    rows, truth = gold_rows(pa.array(ids, pa.string()), gold_labels(path, qid))
    if len(rows) != len(ids):
        raise ValueError(f"{path}: {len(ids) - len(rows)} of the {len(ids)} records have no gold label for {qid!r}")
    return truth


def _by_id(table: pa.Table, column: str, ids: list[str], default: Any = 0) -> np.ndarray:
    value_of = dict(zip(table.column("id").cast(pa.string()).to_pylist(), table.column(column).to_pylist()))
    return np.array([value_of.get(i, default) for i in ids])


def label_answers(dev_labels: Path, qid: str, ids: list[str]) -> dict[str, np.ndarray]:
    """Yes/no of each source alone (abstain = no), of majority vote and of the combined labels on ``ids``."""
    votes = pq.read_table(dev_labels / "votes" / f"{qid}.parquet")
    sources = [c for c in votes.column_names if c != "id" and "__" not in c]
    matrix = np.stack([_by_id(votes, name, ids, -1) for name in sources], axis=1).astype(np.int8)
    out = {name: matrix[:, k] == 1 for k, name in enumerate(sources)}
    out["majority vote"] = (matrix == 1).sum(axis=1) > (matrix == 0).sum(axis=1)
    combined = combine(votes, method="label_model").probs
    out["combined labels"] = _by_id(combined, "label", ids) == 1
    return out


def baseline_answers(questions: list, labels: Path, texts: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """{question: {baseline: answers on ``texts``}}: TF-IDF + LR and MiniLM embeddings + LR on the seed labels,
    the student's train/hold-out split and threshold rule."""
    from assay.distill import baselines
    from assay.distill.base import TrainConfig
    from assay.distill.data import LabelsError, load_question_data, split_holdout

    embed = baselines.minilm_embedder(labels / "cache")
    out: dict[str, dict[str, np.ndarray]] = {}
    for loaded in questions:
        config = TrainConfig.for_spec(loaded)
        try:
            data = load_question_data(labels, loaded.spec.id)
        except LabelsError:
            continue
        train_index, hold_index = split_holdout(data, config.holdout, config.seed)
        train, hold, rate = data.subset(train_index), data.subset(hold_index), float(data.p_yes.mean())
        fitted = (baselines.fit_tfidf_lr(train, hold, rate, config.class_weight, config.seed),
                  baselines.fit_embedding_lr(train, hold, rate, embed, config.class_weight, config.seed))
        out[loaded.spec.id] = {f"baseline: {b.name}": b.answer(texts) for b in fitted}
    return out


def teacher_cost_per_record(questions: list, texts: list[str]) -> float:
    """List-price USD per record for asking every question of the recorded teacher (upper token estimate)."""
    from assay.labeling.teacher.cost import cost_usd, estimate_prompt_tokens
    from assay.labeling.teacher.prompt import render_prompt
    from assay.labeling.teacher.settings import DEFAULT_PRICES

    price = DEFAULT_PRICES[TEACHER_PRICE_MODEL]
    total = sum(cost_usd(price, estimate_prompt_tokens(render_prompt(q.spec, t)), TEACHER_OUTPUT_TOKENS)
                for q in questions for t in texts)
    return total / max(len(texts), 1)


def speed_and_cost(questions: list, texts: list[str], student_records_per_second: float) -> dict[str, Any]:
    """records/s and USD per 1,000 records (all questions) for student (measured) and teacher (list price)."""
    teacher = teacher_cost_per_record(questions, texts)
    cores = os.cpu_count() or 1
    student = (1000 / student_records_per_second) * cores * CPU_USD_PER_CORE_HOUR / 3600 \
        if student_records_per_second else None
    return {"student": {"records_per_second": student_records_per_second, "usd_per_1000": student,
                        "how": f"measured (all questions in one engine pass) on {cores} CPU cores at "
                               f"${CPU_USD_PER_CORE_HOUR}/core-hour"},
            "teacher": {"records_per_second": None, "usd_per_1000": 1000 * teacher,
                        "how": f"{TEACHER_PRICE_MODEL} list price x upper token estimate of the prompts of all "
                               f"{len(questions)} questions; records/s not measurable offline (recorded answers)"}}


def recorded_teacher(loaded, ids: list[str]) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(name, answered, answers) of the question's recorded teacher (a labels_file voting yes and no)."""
    from assay.labeling.sources.labels_file import LabelsFileVoter
    from assay.schemas.questions import LabelsFileSource

    for source in loaded.spec.sources:
        if isinstance(source, LabelsFileSource) and source.vote == "both":
            vote = LabelsFileVoter(source, loaded.path).vote(ids, ids).column("vote").to_numpy()
            return source.name, vote >= 0, vote == 1
    return None


def question_rows(questions: list, dev: Path, dev_labels: Path, ids: list[str],
                  student: dict[str, tuple[np.ndarray, float]], baselines: dict[str, dict[str, np.ndarray]],
                  cascades: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per question: gold positives and the scores of every method on the same dev records."""
    rows = {}
    for loaded in questions:
        qid = loaded.spec.id
        gold = _gold(dev, qid, ids)
        answers = label_answers(dev_labels, qid, ids)
        if qid in student:
            p, threshold = student[qid]
            answers["student"] = p >= threshold
        answers.update(baselines.get(qid, {}))
        if qid in cascades:
            answers["student + cascade"] = cascades[qid].pop("answers")
        rows[qid] = {"records": len(ids), "positives": int(gold.sum()),
                     "methods": {name: binary_scores(gold, a) for name, a in answers.items()}}
        if qid in cascades:
            rows[qid]["cascade"] = cascades[qid]
        teacher = recorded_teacher(loaded, ids)
        if teacher is not None and "student" in answers:
            name, answered, said = teacher
            rows[qid]["teacher"] = {"name": name, "records": int(answered.sum()),
                                    "teacher_scores": binary_scores(gold[answered], said[answered]),
                                    "student_scores": binary_scores(gold[answered], answers["student"][answered])}
    return rows


def cascades(questions: list, ids: list[str], dev: Path, student: dict[str, tuple[np.ndarray, float]],
             share: float, budget_usd: float | None, cost_per_record: float) -> dict[str, dict[str, Any]]:
    """The cascade per question that has a recorded teacher: summary and answers (key ``answers``)."""
    from assay.distill.cascade import cascade

    out = {}
    per_question = cost_per_record / max(len(questions), 1)
    for loaded in questions:
        qid = loaded.spec.id
        teacher = recorded_teacher(loaded, ids)
        if teacher is None or qid not in student or share <= 0:
            continue
        name, answered, said = teacher
        p, threshold = student[qid]
        result = cascade(p, threshold, share, lambda index, a=answered, s=said: (a[index], s[index]), per_question,
                         budget_usd)
        out[qid] = {"teacher": name, "share": share, "budget_usd": budget_usd, "answers": result.answers,
                    **result.summary(p >= threshold, _gold(dev, qid, ids))}
    return out
