"""What a data team would use instead of a LoRA student, trained on the same labels, decided the same way.

Each ``fit_*`` function trains on the training part of a question's labelled seed records (the soft
``p_yes`` of the label model, as the student does) and returns a :class:`Baseline` whose threshold
is set by the student's rule: on the held-out part, say yes to the label model's estimated share of
yes records (:func:`~assay.distill.evaluate.prevalence_threshold`). So a baseline and the student see
the same records, the same targets and the same decision rule; only the model differs.

- :func:`fit_tfidf_lr`: word 1-2-gram and character 3-5-gram TF-IDF, logistic regression (the student's
  lexical head, :func:`fit_lexical_head`, on its own).
- :func:`fit_embedding_lr`: frozen MiniLM sentence embeddings (mean pooled, as the embedding source
  computes them), logistic regression.
- :func:`fit_setfit`: SetFit (contrastive fine-tuning of the MiniLM body on sampled pairs), then the
  same soft logistic head on all training records.
- :func:`keyword_rules`: the question's ``rules`` sources alone (a yes vote is yes; no and abstain are no).

Soft labels train a logistic regression as two weighted copies of each record (yes with weight
``p_yes``, no with ``1 - p_yes``), times the student's class weights; ``C`` is chosen from a small
grid by the held-out log loss against the soft labels (the student's early-stopping criterion).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.engine.lexical import LexicalHead, from_fitted
from assay.schemas.questions import QuestionSpec, RulesSource

from .data import QuestionData, class_weights
from .evaluate import prevalence_threshold

Scorer = Callable[[Sequence[str]], np.ndarray]
C_GRID = (0.5, 2.0, 8.0)
SETFIT_PER_CLASS = 64  # sampled examples per class for SetFit's contrastive pairs (it is a few-shot method)
SETFIT_STEPS = 60


@dataclass(frozen=True)
class Baseline:
    """A fitted baseline: ``score(texts)`` gives P(yes) (or 0/1), ``threshold`` turns it into answers."""

    name: str
    score: Scorer
    threshold: float

    def answer(self, texts: Sequence[str]) -> np.ndarray:
        """Yes/no answers (bool) on ``texts``."""
        return np.asarray(self.score(texts)) >= self.threshold


def _soft_rows(features, p_yes: np.ndarray, class_weight: str):
    """Two weighted copies of each record: (features, y, sample_weight) for a soft-target logistic fit."""
    import scipy.sparse as sp

    w_no, w_yes = class_weights(p_yes, class_weight)
    stacked = sp.vstack([features, features]) if sp.issparse(features) else np.vstack([features, features])
    y = np.r_[np.ones(len(p_yes)), np.zeros(len(p_yes))]
    weight = np.r_[w_yes * p_yes, w_no * (1 - p_yes)]
    return stacked, y, weight


def _log_loss(p: np.ndarray, soft: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(soft * np.log(p) + (1 - soft) * np.log(1 - p)).mean())


def _fit_logistic(x_train, p_train: np.ndarray, x_hold, p_hold: np.ndarray, class_weight: str, seed: int):
    """The logistic regression (soft targets) whose ``C`` has the lowest held-out log loss (warm-started
    along the grid)."""
    from sklearn.linear_model import LogisticRegression

    x, y, weight = _soft_rows(x_train, p_train, class_weight)
    model = LogisticRegression(max_iter=1000, tol=1e-3, warm_start=True, random_state=seed)
    best = None
    for c in C_GRID:
        model.set_params(C=c).fit(x, y, sample_weight=weight)
        loss = _log_loss(model.predict_proba(x_hold)[:, 1], p_hold)
        if best is None or loss < best[0]:
            best = (loss, c, model.coef_.copy(), model.intercept_.copy())
    model.set_params(C=best[1])
    model.coef_, model.intercept_ = best[2], best[3]
    return model


def _decided(name: str, score: Scorer, hold: QuestionData, prevalence: float) -> Baseline:
    return Baseline(name, score, prevalence_threshold(score(hold.texts), prevalence))


_VECTORIZERS: dict[str, object] = {}


def tfidf_vectorizer(texts: Sequence[str]):
    """Word 1-2-gram + character 3-5-gram TF-IDF fitted on ``texts`` (no labels: the seed records of a
    label run, shared by its questions; the last one fitted is kept)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    key = hashlib.blake2b("\x00".join(sorted(texts)).encode(), digest_size=16).hexdigest()
    if key not in _VECTORIZERS:
        _VECTORIZERS.clear()
        _VECTORIZERS[key] = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True,
                                     max_features=50_000)),
        ]).fit(list(texts))
    return _VECTORIZERS[key]


def fit_lexical_head(train: QuestionData, hold: QuestionData, class_weight: str = "sqrt", seed: int = 0) -> LexicalHead:
    """TF-IDF (word 1-2 grams + character 3-5 grams, sublinear tf; fitted without labels on the train and
    hold-out texts) and a soft logistic regression, as a head the engine can load (:mod:`assay.engine.lexical`)."""
    vectorizer = tfidf_vectorizer([*train.texts, *hold.texts])
    model = _fit_logistic(vectorizer.transform(train.texts), train.p_yes, vectorizer.transform(hold.texts),
                          hold.p_yes, class_weight, seed)
    return from_fitted(vectorizer, model)


def tfidf_baseline(head: LexicalHead, hold: QuestionData, prevalence: float) -> Baseline:
    """The TF-IDF + LR baseline of a fitted lexical head, decided by the student's rule."""
    return _decided("tfidf_lr", head.probability, hold, prevalence)


def fit_tfidf_lr(train: QuestionData, hold: QuestionData, prevalence: float, class_weight: str = "sqrt",
                 seed: int = 0) -> Baseline:
    """TF-IDF + logistic regression (:func:`fit_lexical_head`) on its own."""
    return tfidf_baseline(fit_lexical_head(train, hold, class_weight, seed), hold, prevalence)


def minilm_embedder(cache_dir: Path | None = None) -> Callable[[list[str]], np.ndarray]:
    """MiniLM sentence vectors as the embedding source computes them (shared on-disk cache when given)."""
    from assay.labeling.sources.embedding import TextEmbedder

    embedder = TextEmbedder(None, cache_dir=cache_dir)

    def embed(texts: list[str]) -> np.ndarray:
        vectors = embedder.embed(list(texts))
        embedder.save()
        return vectors

    return embed


def fit_embedding_lr(train: QuestionData, hold: QuestionData, prevalence: float,
                     embed: Callable[[list[str]], np.ndarray] | None = None, class_weight: str = "sqrt",
                     seed: int = 0) -> Baseline:
    """Frozen sentence embeddings (default: MiniLM, mean pooled) and a soft logistic regression."""
    embed = embed or minilm_embedder()
    model = _fit_logistic(embed(train.texts), train.p_yes, embed(hold.texts), hold.p_yes, class_weight, seed)
    return _decided("embedding_lr", lambda texts: model.predict_proba(embed(list(texts)))[:, 1], hold, prevalence)


def _setfit_sample(train: QuestionData, per_class: int, seed: int) -> tuple[list[str], list[int]]:
    """Up to ``per_class`` records of each hard label, drawn at random."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(np.flatnonzero(train.label == c))[:per_class] for c in (0, 1)])
    return [train.texts[i] for i in index], [int(train.label[i]) for i in index]


def fit_setfit(train: QuestionData, hold: QuestionData, prevalence: float, base: Path | None = None,
               per_class: int = SETFIT_PER_CLASS, steps: int = SETFIT_STEPS, class_weight: str = "sqrt",
               seed: int = 0) -> Baseline:
    """SetFit: contrastive fine-tuning of a sentence-transformers body on pairs of sampled records, then
    the soft logistic head on every training record's embedding (offline: a local model folder)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from assay.schemas.models import bundled_minilm

    texts, labels = _setfit_sample(train, per_class, seed)
    model = SetFitModel.from_pretrained(str(base or bundled_minilm()), local_files_only=True)
    args = TrainingArguments(batch_size=16, num_epochs=1, max_steps=steps, seed=seed, report_to="none",
                             show_progress_bar=False, save_strategy="no", logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
    trainer.train()
    body = model.model_body

    def embed(batch: Sequence[str]) -> np.ndarray:
        return np.asarray(body.encode(list(batch), batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    head = _fit_logistic(embed(train.texts), train.p_yes, embed(hold.texts), hold.p_yes, class_weight, seed)
    return _decided("setfit", lambda batch: head.predict_proba(embed(batch))[:, 1], hold, prevalence)


def keyword_rules(spec: QuestionSpec) -> Baseline:
    """The question's keyword rules alone: yes where a ``rules`` source votes yes (no and abstain: no)."""
    from assay.labeling.sources.rules import RulesVoter
    from assay.labeling.votes import YES

    voters = [RulesVoter(s) for s in spec.sources if isinstance(s, RulesSource)]
    if not voters:
        raise ValueError(f"question {spec.id!r} has no rules source: no keyword baseline")

    def score(texts: Sequence[str]) -> np.ndarray:
        return np.array([float(any(v.vote_one(t) == YES for v in voters)) for t in texts], dtype=np.float32)

    return Baseline("keyword_rules", score, 0.5)
