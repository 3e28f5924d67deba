"""Training data of one question from a label run folder: seed texts joined with probabilistic labels.

A label run folder has ``seed.parquet`` (``id``, ``text``) and ``labels/<question_id>.parquet``
(``id``, ``p_yes``, ``label``). Labels that cannot train a classifier are refused here with a message
that names the file and the fix: missing files or columns, ids not in the seed set, all-abstain
(null/NaN ``p_yes``), no positives or no negatives, too few records.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MIN_RECORDS = 20
MIN_PER_CLASS = 2  # hard-label records of each class (one for training, one held out)


class LabelsError(ValueError):
    """The labels of a question cannot be trained on (the message says which file and how to fix it)."""


@dataclass(frozen=True)
class QuestionData:
    """Records of one question: ids, texts, P(yes) from the label model and the hard label (P >= 0.5)."""

    question_id: str
    ids: list[str]
    texts: list[str]
    p_yes: np.ndarray  # float32
    label: np.ndarray  # int8

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> QuestionData:
        return QuestionData(self.question_id, [self.ids[i] for i in index], [self.texts[i] for i in index],
                            self.p_yes[index], self.label[index])


def read_seed(labels_dir: str | Path) -> pa.Table:
    """``seed.parquet`` of a label run folder (``id``, ``text``), ids as strings."""
    path = Path(labels_dir) / "seed.parquet"
    if not path.is_file():
        raise LabelsError(f"{path}: missing; point --labels at the folder written by `assay label --out DIR`")
    table = pq.read_table(path)
    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise LabelsError(f"{path}: missing column(s) {', '.join(sorted(missing))} (needs id, text)")
    return pa.table({"id": table.column("id").cast(pa.string()), "text": table.column("text").cast(pa.string())})


def load_question_data(labels_dir: str | Path, question_id: str, seed: pa.Table | None = None) -> QuestionData:
    """Join ``labels/<question_id>.parquet`` with the seed texts and check they can train a classifier."""
    labels_dir = Path(labels_dir)
    seed = read_seed(labels_dir) if seed is None else seed
    path = labels_dir / "labels" / f"{question_id}.parquet"
    if not path.is_file():
        raise LabelsError(f"{path}: no labels for question {question_id!r}; run `assay label` for it first")
    table = pq.read_table(path)
    if "id" not in table.column_names or "p_yes" not in table.column_names:
        raise LabelsError(f"{path}: needs columns id and p_yes (has {', '.join(table.column_names)})")
    ids = table.column("id").cast(pa.string()).to_pylist()
    text_of = dict(zip(seed.column("id").to_pylist(), seed.column("text").to_pylist()))
    unknown = [i for i in ids if i not in text_of]
    if unknown:
        raise LabelsError(f"{path}: {len(unknown)} id(s) are not in {labels_dir / 'seed.parquet'} "
                          f"(e.g. {', '.join(map(repr, unknown[:3]))}); labels and seed come from different runs")
    if len(set(ids)) != len(ids):
        raise LabelsError(f"{path}: duplicate ids; each record needs exactly one label")
    p_yes = pc.fill_null(table.column("p_yes").cast(pa.float32()), float("nan")).to_numpy(zero_copy_only=False)
    known = ~np.isnan(p_yes)
    if not known.any():
        raise LabelsError(f"{path}: every p_yes is empty (all sources abstained); add sources or rules that "
                          "vote on these records")
    if ((p_yes[known] < 0) | (p_yes[known] > 1)).any():
        raise LabelsError(f"{path}: p_yes must lie in [0, 1]")
    keep = np.flatnonzero(known)
    data = QuestionData(question_id, [ids[i] for i in keep], [text_of[ids[i]] for i in keep],
                        p_yes[keep].astype(np.float32), (p_yes[keep] >= 0.5).astype(np.int8))
    positives, negatives = int(data.label.sum()), int(len(data) - data.label.sum())
    if len(data) < MIN_RECORDS:
        raise LabelsError(f"{path}: only {len(data)} labelled record(s); at least {MIN_RECORDS} are needed "
                          "(label a larger seed set: assay label --sample N)")
    if positives < MIN_PER_CLASS:
        labelled = int(pc.sum(table.column("label")).as_py() or 0) if "label" in table.column_names else 0
        fix = (f"the label run labels {labelled} of them yes at its class balance, but its sources leave none "
               "likelier yes than not: add a source or rules that find yes cases" if labelled >= MIN_PER_CLASS else
               "label a larger (or stratified: --stratify) seed set, add a source that finds yes cases, or state "
               "the share of yes you expect (expected_yes_rate in the question file)")
        raise LabelsError(f"{path}: {positives} record(s) with p_yes >= 0.5 among {len(data)}; a classifier needs "
                          f"at least {MIN_PER_CLASS} yes examples — {fix}")
    if negatives < MIN_PER_CLASS:
        raise LabelsError(f"{path}: {negatives} record(s) with p_yes < 0.5 among {len(data)}; a classifier needs "
                          f"at least {MIN_PER_CLASS} no examples — add a source or rules that vote no, or state "
                          "the share of yes you expect (expected_yes_rate in the question file)")
    return data


def split_holdout(data: QuestionData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split on the hard label: ``(train_index, holdout_index)``, each class in both parts.

    Records are ranked by a hash of (seed, id), so questions labelled on the same seed set hold out
    nearly the same records (they can be scored together) and a run repeats exactly.
    """
    rank = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
                     for i in data.ids], dtype=np.uint64)
    train, holdout = [], []
    for cls in (0, 1):
        members = np.flatnonzero(data.label == cls)
        members = members[np.argsort(rank[members], kind="stable")]
        n_hold = min(max(1, int(round(len(members) * fraction))), len(members) - 1)
        holdout.append(members[:n_hold])
        train.append(members[n_hold:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def class_weights(p_yes: np.ndarray, mode: str) -> tuple[float, float]:
    """(weight of 'no', weight of 'yes'): balanced = 1/(2 prior), sqrt = its square root, none = 1."""
    prior = float(np.clip(p_yes.mean(), 1e-3, 1 - 1e-3))
    balanced = (0.5 / (1 - prior), 0.5 / prior)
    if mode == "balanced":
        return balanced
    if mode == "sqrt":
        return math.sqrt(balanced[0]), math.sqrt(balanced[1])
    return 1.0, 1.0
