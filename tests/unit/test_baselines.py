"""The baselines a student must beat: trained on the same soft labels, decided by the student's threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from assay.distill.baselines import _soft_rows, fit_embedding_lr, fit_tfidf_lr, keyword_rules
from assay.distill.data import QuestionData
from assay.schemas.questions import QuestionSpec

WORDS = ["the", "edit", "page", "source", "thanks", "article", "talk", "please", "revert", "merge"]


def records(n: int, seed: int, name: str = "is_bad") -> QuestionData:
    """Texts where 'idiot' makes a yes; soft labels 0.9 / 0.1 with a few flipped (noisy labels)."""
    rng = np.random.default_rng(seed)
    texts, p_yes = [], []
    for _ in range(n):
        bad = rng.random() < 0.25
        words = list(rng.choice(WORDS, size=6)) + (["idiot"] if bad else [])
        texts.append(" ".join(rng.permutation(words)))
        p_yes.append(0.9 if bad != (rng.random() < 0.05) else 0.1)
    p = np.array(p_yes, dtype=np.float32)
    return QuestionData(name, [f"{seed}-{k}" for k in range(n)], texts, p, (p >= 0.5).astype(np.int8))


def test_soft_rows_are_two_weighted_copies_per_record():
    x, y, weight = _soft_rows(np.eye(2), np.array([0.8, 0.2]), "none")
    assert x.shape == (4, 2) and y.tolist() == [1, 1, 0, 0]
    assert weight.tolist() == pytest.approx([0.8, 0.2, 0.2, 0.8])


def test_tfidf_lr_learns_the_word_and_says_yes_to_the_estimated_share():
    train, hold, test = records(400, 0), records(100, 1), records(300, 2)
    prevalence = float(np.r_[train.p_yes, hold.p_yes].mean())
    baseline = fit_tfidf_lr(train, hold, prevalence)
    assert baseline.name == "tfidf_lr"
    held = baseline.score(hold.texts) >= baseline.threshold
    assert held.mean() == pytest.approx(prevalence, abs=0.02)  # the student's rule: yes rate = prevalence
    truth = np.array(["idiot" in t for t in test.texts])
    answers = baseline.answer(test.texts)
    assert (answers == truth).mean() > 0.9


def test_embedding_lr_uses_the_given_embedder():
    train, hold = records(200, 3), records(60, 4)
    embed = lambda texts: np.array([[float("idiot" in t), 1.0] for t in texts])  # noqa: E731
    baseline = fit_embedding_lr(train, hold, 0.1, embed=embed)  # below the share of "idiot" records: no ties cut
    assert baseline.answer(["the idiot edit", "thanks for the edit"]).tolist() == [True, False]


def test_keyword_rules_alone_say_yes_only_where_a_rule_votes_yes():
    spec = QuestionSpec(id="is_bad", version=1, question="Is this comment bad?",
                        sources=[{"kind": "rules", "yes_keywords": ["idiot"], "no_keywords": ["thanks"]}])
    rules = keyword_rules(spec)
    assert rules.answer(["you idiot", "thanks", "the talk page"]).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="has no rules source"):
        keyword_rules(QuestionSpec(id="q", version=1, question="Is it?", sources=[{"kind": "embedding"}]))
