"""The cascade: the least sure share of records to the teacher, within the budget, and what it gained."""

from __future__ import annotations

import numpy as np
import pytest

from assay.distill.cascade import cascade, least_sure


def test_least_sure_are_the_records_closest_to_the_threshold():
    p = np.array([0.9, 0.52, 0.1, 0.45, 0.7, 0.5])
    assert least_sure(p, 0.5, 3).tolist() == [1, 3, 5]
    assert least_sure(p, 0.5, 0).tolist() == [] and len(least_sure(p, 0.5, 99)) == 6


def test_cascade_routes_the_share_uses_answers_where_the_teacher_answered_and_counts_cost():
    p = np.array([0.9, 0.52, 0.1, 0.45, 0.7, 0.5, 0.2, 0.8, 0.05, 0.95])
    gold = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 1], dtype=bool)
    asked = []

    def teacher(index):
        asked.append(index.tolist())
        answered = index != 5  # the teacher has no answer for record 5
        return answered, gold[index]

    result = cascade(p, 0.5, 0.3, teacher, cost_per_record=0.01)
    assert asked == [[1, 3, 5]] and result.routed.sum() == 3 and result.answered.tolist().count(True) == 2
    assert result.answers[1] == 0 and result.answers[3] == 1 and result.answers[5] == 1  # 5 keeps the student's
    summary = result.summary(p >= 0.5, gold)
    assert summary["share_routed"] == pytest.approx(0.3) and summary["cost_usd"] == pytest.approx(0.03)
    assert summary["changed"] == 2 and summary["cascade_f1"] == 1.0 and summary["f1_gained"] > 0


def test_the_budget_caps_what_is_routed_and_bad_settings_are_refused():
    p = np.linspace(0, 1, 100)
    capped = cascade(p, 0.5, 0.5, lambda i: (np.ones(len(i), bool), np.ones(len(i), bool)), 0.1, budget_usd=0.25)
    assert capped.routed.sum() == 2 and capped.cost_usd == pytest.approx(0.2)
    none = cascade(p, 0.5, 0.0, lambda i: pytest.fail("nothing should be routed"))
    assert not none.routed.any() and none.cost_usd == 0.0
    with pytest.raises(ValueError, match="share must lie in"):
        cascade(p, 0.5, 1.5, lambda i: (i, i))
    with pytest.raises(ValueError, match="budget must be >= 0"):
        cascade(p, 0.5, 0.1, lambda i: (i, i), 0.1, budget_usd=-1)
