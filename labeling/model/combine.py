"""Combine the sources' votes for one question into one probabilistic label per record.

Methods:
- `label_model` — Assay's Dawid–Skene EM (`label_model.py`): estimated class balance, per-source
  sensitivity/specificity, abstains as an outcome, confidences as soft votes; works with 1 or 2 sources.
- `weighted` — weighted majority vote: the spec's source weights times each vote's confidence.
- `majority` — plain majority vote.
- `snorkel` — Snorkel's `LabelModel`, for comparison (it refuses fewer than 3 sources).
- `auto` — `label_model`; or, when gold labels for some records are given, whichever of the above scores
  the best F1 on them (the reason says which and why).

Decision rule: the label model labels yes when P(yes) reaches the threshold that maximises the F1 it
expects under its own probabilities (sum of P(yes) over the labelled-yes records as true positives) —
for rare classes this sits well below 0.5, for balanced ones near it; no gold is needed. The vote-counting
methods label yes above 0.5 (ties and records without votes: no).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..metrics import binary_scores, f1_threshold
from ..votes import VoteMatrix, vote_matrix
from .label_model import DawidSkene, outcome_counts

METHODS = ("auto", "label_model", "weighted", "majority", "snorkel")
CANDIDATES = ("label_model", "weighted", "majority", "snorkel")


@dataclass
class CombineResult:
    """The combined labels and how they were made."""

    probs: pa.Table  # id, p_yes (float32), label (int8 0/1)
    method: str
    reason: str
    source_accuracy: dict[str, float]  # the label model's estimate of P(vote right | voted)
    coverage: dict[str, float]
    prior: float  # the label model's estimated P(yes)
    threshold: float
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # gold scores per method (with gold)


def majority_vote(matrix: VoteMatrix, fill: float = 0.5) -> np.ndarray:
    """P(yes) as the share of yes among the votes cast (`fill`, e.g. the class balance, where none was cast)."""
    yes = (matrix.votes == 1).sum(axis=1)
    cast = (matrix.votes >= 0).sum(axis=1)
    return np.where(cast > 0, yes / np.maximum(cast, 1), fill)


def weighted_vote(matrix: VoteMatrix, fill: float = 0.5) -> np.ndarray:
    """P(yes) as the weighted mean of soft votes (confidence c: yes counts c, no counts 1 - c); `fill` where
    no source voted."""
    conf = np.where(np.isnan(matrix.conf), 1.0, matrix.conf)
    soft_yes = np.where(matrix.votes == 1, conf, 1.0 - conf)
    weight = np.where(matrix.votes >= 0, matrix.weights[None, :], 0.0)
    total = weight.sum(axis=1)
    return np.where(total > 0, (weight * soft_yes).sum(axis=1) / np.maximum(total, 1e-12), fill)


def snorkel_vote(matrix: VoteMatrix, seed: int = 0) -> np.ndarray:
    """P(yes) from Snorkel's LabelModel (hard votes only; confidences are ignored)."""
    from snorkel.labeling.model import LabelModel

    if len(matrix.sources) < 3:
        raise ValueError(f"Snorkel's LabelModel needs at least 3 sources; these votes have {len(matrix.sources)} "
                         "(use method label_model, which works with any number)")
    model = LabelModel(cardinality=2, verbose=False)
    model.fit(matrix.votes.astype(np.int64), n_epochs=500, lr=0.01, seed=seed, progress_bar=False)
    return model.predict_proba(matrix.votes.astype(np.int64))[:, 1]


Labelled = tuple[np.ndarray, np.ndarray, float]  # p_yes, labels, threshold


def _label_model(matrix: VoteMatrix) -> tuple[Labelled, DawidSkene]:
    counts = outcome_counts(matrix.votes, matrix.conf)
    model = DawidSkene().fit(counts)
    p_yes = model.predict_proba(counts)
    threshold = f1_threshold(p_yes, p_yes)
    return (p_yes, p_yes > threshold, threshold), model


def _run(method: str, matrix: VoteMatrix) -> Labelled:
    p_yes = {"weighted": weighted_vote, "majority": majority_vote, "snorkel": snorkel_vote}[method](matrix)
    return p_yes, p_yes > 0.5, 0.5


def combine(votes: pa.Table | VoteMatrix, method: str = "auto", gold: pa.Table | None = None,
            weights: dict[str, float] | None = None) -> CombineResult:
    """Combine votes (a votes table, or one already parsed by `vote_matrix`) into `id`, `p_yes`, `label`.

    With `gold` (`id`, `label`), `auto` picks the method by F1 on it; `weights` apply to a table only.
    """
    if method not in METHODS:
        raise ValueError(f"unknown combine method {method!r}; use one of: {', '.join(METHODS)}")
    matrix = votes if isinstance(votes, VoteMatrix) else vote_matrix(votes, weights)
    decision, model = _label_model(matrix)
    results = {"label_model": decision}
    candidates: dict[str, dict[str, float]] = {}
    gold_ids, gold_labels = gold_rows(matrix.ids, gold) if gold is not None else (np.zeros(0, int), None)
    usable = [name for name in CANDIDATES if name != "snorkel" or len(matrix.sources) >= 3]
    for name in usable if len(gold_ids) else ():
        if name not in results:
            results[name] = _run(name, matrix)
        candidates[name] = binary_scores(gold_labels, results[name][1][gold_ids])
    if method != "auto":
        chosen, reason = method, "chosen by the caller"
    elif candidates:
        key = "f1" if gold_labels.any() else "accuracy"
        chosen = max(usable, key=lambda name: candidates[name][key])  # ties: earlier (label model) wins
        scores = ", ".join(f"{name} {candidates[name][key]:.3f}" for name in usable)
        reason = f"best {key} on {len(gold_ids)} gold records ({scores})"
    elif gold is not None:
        chosen, reason = "label_model", "no gold record is among the votes; the label model is the default"
    else:
        chosen, reason = "label_model", "no gold labels; the label model is the default"
    if chosen not in results:
        results[chosen] = _run(chosen, matrix)
    p_yes, labels, threshold = results[chosen]
    probs = pa.table({"id": matrix.ids, "p_yes": pa.array(p_yes.astype(np.float32)),
                      "label": pa.array(labels.astype(np.int8))})
    accuracy = model.source_accuracy()
    return CombineResult(
        probs=probs, method=chosen, reason=reason,
        source_accuracy={name: round(float(a), 4) for name, a in zip(matrix.sources, accuracy)},
        coverage={name: round(float((matrix.votes[:, j] >= 0).mean()) if len(matrix.votes) else 0.0, 4)
                  for j, name in enumerate(matrix.sources)},
        prior=round(model.prior, 4), threshold=round(threshold, 4), candidates=candidates,
    )


def gold_rows(ids: pa.Array, gold: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `ids` that have a gold label (`gold`: id, label), and those labels as bools."""
    lookup = dict(zip(gold.column("id").cast(pa.string()).to_pylist(), gold.column("label").to_pylist()))
    rows = [(i, lookup[key]) for i, key in enumerate(ids.cast(pa.string()).to_pylist())
            if lookup.get(key) is not None]
    return np.array([r for r, _ in rows], dtype=np.int64), np.array([int(v) for _, v in rows], dtype=bool)
