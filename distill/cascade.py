"""A cascade beyond the anchors: send the records the student is least sure about to the teacher.

The student answers every record; the ``share`` of records whose P(yes) lies closest to its decision
threshold (least sure) goes to the teacher, as many as the budget allows at the teacher's cost per
record, and the teacher's answer replaces the student's wherever the teacher answered. The result
says how many were routed, how many the teacher answered, what that cost, and (given gold) the F1
gained over the student alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.labeling.metrics import precision_recall_f1

Teacher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # indices -> (answered, answers), both bool


@dataclass(frozen=True)
class CascadeResult:
    """The cascade's answers and what routing cost."""

    answers: np.ndarray  # bool, one per record
    routed: np.ndarray  # bool: sent to the teacher
    answered: np.ndarray  # bool: sent and answered (the teacher's answer is used)
    cost_usd: float

    def summary(self, student: np.ndarray, gold: np.ndarray | None = None) -> dict[str, Any]:
        """Share routed and answered, cost, answers changed, and F1 with and without the cascade (gold given)."""
        out: dict[str, Any] = {"records": int(len(self.answers)), "routed": int(self.routed.sum()),
                               "share_routed": float(self.routed.mean()) if len(self.answers) else 0.0,
                               "teacher_answered": int(self.answered.sum()), "cost_usd": round(self.cost_usd, 6),
                               "changed": int((self.answers != student).sum())}
        if gold is not None:
            gold = np.asarray(gold, dtype=bool)
            before, after = precision_recall_f1(gold, student)[2], precision_recall_f1(gold, self.answers)[2]
            out.update(student_f1=before, cascade_f1=after, f1_gained=after - before)
        return out


def least_sure(p: np.ndarray, threshold: float, count: int) -> np.ndarray:
    """Indices of the ``count`` records whose score is closest to the threshold (ties: lower index first)."""
    count = max(0, min(int(count), len(p)))
    distance = np.abs(np.asarray(p, dtype=np.float64) - threshold)
    return np.sort(np.argsort(distance, kind="stable")[:count])


def cascade(p: np.ndarray, threshold: float, share: float, teacher: Teacher, cost_per_record: float = 0.0,
            budget_usd: float | None = None) -> CascadeResult:
    """The student's answers with the least sure ``share`` of records (capped by ``budget_usd``) answered
    by ``teacher`` where it answers."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"cascade share must lie in [0, 1], not {share}")
    if budget_usd is not None and budget_usd < 0:
        raise ValueError(f"cascade budget must be >= 0 USD, not {budget_usd}")
    p = np.asarray(p, dtype=np.float64)
    student = p >= threshold
    count = math.floor(share * len(p) + 1e-9)
    if budget_usd is not None and cost_per_record > 0:
        count = min(count, math.floor(budget_usd / cost_per_record + 1e-9))
    index = least_sure(p, threshold, count)
    routed = np.zeros(len(p), dtype=bool)
    routed[index] = True
    answers, answered = student.copy(), np.zeros(len(p), dtype=bool)
    if len(index):
        got, said = teacher(index)
        got, said = np.asarray(got, dtype=bool), np.asarray(said, dtype=bool)
        answered[index[got]] = True
        answers[index[got]] = said[got]
    return CascadeResult(answers, routed, answered, cost_per_record * len(index))
