"""Combine the sources' votes for one question into one probabilistic label per record.

Methods:
- `label_model` — Assay's Dawid–Skene EM (`label_model.py`): estimated class balance, per-source
  firing rates per class (abstains as an outcome, so one-way keyword rules count), confidences as soft
  votes, sources kept better than chance, dependent sources sharing one weight.
- `weighted` — weighted majority vote: the spec's source weights times each vote's confidence.
- `majority` — plain majority vote.
- `snorkel` — Snorkel's `LabelModel` given the same class balance, for comparison (3 sources or more).
- `auto` — `label_model`; or, when gold labels for some records are given, whichever of the above scores
  the best F1 on them (the reason says which and why).

Class balance: the label model's estimate, or `class_balance` when the caller knows it. Decision rule, the
same for every method: label yes the class-balance share of records with the highest P(yes), records with
equal P(yes) alike (`assay.labeling.metrics.prevalence_labels`). Records nobody voted on get the class
balance as P(yes) under the votes (majority, weighted); under the label model they get what every silent
source's rates say (a one-way source that did not fire is weak evidence for the other class). Setting them
to the balance instead was measured on the label suite and not adopted (docs/QUALITY.md).

Input the model cannot identify gets the honest answer and a warning: no source voted, or only constant
sources (P(yes) is the class balance, or what the constant sources say); one informative source (its
votes are the labels). A label-model fit that collapsed (most votes from sources pushed below chance, a class
whose one-way sources it explained away, the no class left with under two records' worth of probability, one
label for every record, or a balance on the other side of 0.5 from every two-way source's share of yes, unless
that share comes from a source voting on half the records or more and the fit lies near 0.5) falls back to
weighted vote, at the given class balance or with it unknown (0.5), and the reason says so. When one large tie group (most often the records nobody voted on) puts the
labels' yes rate far from the class balance, a warning says so and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..gold import gold_rows
from ..metrics import binary_scores, far_from_balance, prevalence_labels
from ..votes import ABSTAIN, NO, YES, VoteMatrix, vote_matrix
from .label_model import DawidSkene, logistic, outcome_counts

METHODS = ("auto", "label_model", "weighted", "majority", "snorkel")
BOUND_MARGIN = 0.05  # how far beyond the two-way sources' yes shares the estimated balance may lie
BROAD_SOURCE = 0.5  # a two-way source voting on this share of the records may set the balance across 0.5 ...
NEAR_HALF = 0.15  # ... when the fit's own estimate lies this close to 0.5 (it cannot tell which class is larger)
# A fitted no class with less probability mass than this many records is empty: a collapse. Only the no
# class: a yes class of one or two records is what a rare question on a small seed looks like.
MIN_CLASS_RECORDS = 2.0
SHIFT_CLIP = 1e-6  # at_balance: a share of 0 or 1 has infinite log-odds; it is shifted from this far inside
SHIFT_BOUND = 30.0  # at_balance: the largest shift of log-odds tried (|log-odds| stays under logistic's clip)
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
    warnings: list[str] = field(default_factory=list)  # what the model could not identify, fallbacks
    balance_known: bool = True  # False: `prior` is a guess (0.5): the labels' yes rate says nothing
    labels_follow_balance: bool = True  # False: one tie group moved the labels' yes rate far from `prior`


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


def at_balance(p_yes: np.ndarray, balance: float) -> np.ndarray:
    """`p_yes` moved by one shift of its log-odds so that its mean is `balance` (a prior shift). Weighted vote's
    shares of yes are no probabilities: a yes-only list's every vote is a 1. A student learns P(yes) as one and
    takes its threshold from their mean. The order of the records, and so every label, is kept; a constant
    `p_yes` (no order) is returned as it is."""
    given = np.asarray(p_yes, dtype=np.float64)
    p = np.clip(given, SHIFT_CLIP, 1.0 - SHIFT_CLIP)
    if not 0.0 < balance < 1.0 or p.min() == p.max():
        return given
    log_odds = np.log(p) - np.log1p(-p)
    low, high = -SHIFT_BOUND, SHIFT_BOUND
    for _ in range(60):  # bisection: the mean is increasing in the shift
        mid = (low + high) / 2
        low, high = (low, mid) if logistic(log_odds + mid).mean() > balance else (mid, high)
    return logistic(log_odds + (low + high) / 2)


def snorkel_vote(matrix: VoteMatrix, balance: float, seed: int = 0) -> np.ndarray:
    """P(yes) from Snorkel's LabelModel given `balance` (hard votes only; confidences are ignored)."""
    from snorkel.labeling.model import LabelModel

    if len(matrix.sources) < 3:
        raise ValueError(f"Snorkel's LabelModel needs at least 3 sources; these votes have {len(matrix.sources)} "
                         "(use method label_model, which works with any number)")
    b = float(np.clip(balance, 1e-4, 1 - 1e-4))
    model = LabelModel(cardinality=2, verbose=False)
    model.fit(matrix.votes.astype(np.int64), class_balance=np.array([1 - b, b]), n_epochs=500, lr=0.01, seed=seed,
              progress_bar=False)
    return model.predict_proba(matrix.votes.astype(np.int64))[:, 1]


@dataclass
class LabelModelFit:
    """The label model's P(yes) and class balance, with what it could not identify."""

    p_yes: np.ndarray
    prior: float
    accuracy: np.ndarray  # per source, 0.5 for sources that carry no information
    warnings: list[str]
    fallback: str | None = None  # why weighted vote was used instead, if it was
    balance_known: bool = True  # False: the class balance is a guess (0.5), neither estimated nor given


def _constant(matrix: VoteMatrix) -> np.ndarray:
    """Per source: it gives the same outcome (yes, no or abstain) on every record."""
    votes = matrix.votes
    return (votes == votes[:1]).all(axis=0) if len(votes) else np.ones(votes.shape[1], dtype=bool)


def _subset(matrix: VoteMatrix, keep: np.ndarray) -> VoteMatrix:
    return VoteMatrix(matrix.ids, [s for s, k in zip(matrix.sources, keep) if k], matrix.votes[:, keep],
                      matrix.conf[:, keep], matrix.weights[keep])


def _one_source_balance(votes: np.ndarray) -> float:
    """The class balance one source implies: its yes share among its votes; for a one-way source, its firing
    rate (yes-only) or one minus it (no-only)."""
    yes, no = float((votes == YES).mean()), float((votes == NO).mean())
    if yes and no:
        return yes / (yes + no)
    return yes if yes else 1.0 - no


def _degenerate(matrix: VoteMatrix, informative: np.ndarray, balance: float | None) -> LabelModelFit:
    """Fewer than two informative sources: the class balance, or the one source's votes, with a warning."""
    accuracy = np.full(len(matrix.sources), 0.5)
    if informative.sum() == 1:
        one = _subset(matrix, informative)
        prior = balance if balance is not None else _one_source_balance(one.votes[:, 0])
        return LabelModelFit(weighted_vote(one, prior), prior, accuracy, [
            f"one informative source ({one.sources[0]}): the label model cannot be identified; the labels are "
            "that source's votes"])
    cast = matrix.votes[matrix.votes != ABSTAIN]
    prior = balance if balance is not None else float((cast == YES).mean()) if cast.size else 0.5
    what = "no source voted" if not cast.size else "every source gives one and the same vote on every record"
    return LabelModelFit(np.full(len(matrix.votes), prior), prior, accuracy, [
        f"{what}: the label model cannot be identified; P(yes) is the class balance "
        f"({'given' if balance is not None else 'what the votes say' if cast.size else 'unknown, 0.5'})"],
        balance_known=balance is not None or bool(cast.size))


def _balance_bound(votes: np.ndarray) -> tuple[float, float] | None:
    """The yes share among the votes of the two-way source nearest to 0 or 1, when all lie on one side of 0.5,
    with the share of the records that source votes on.

    A source better than chance whose coverage does not depend on the class votes yes on a share between the
    class balance and 0.5, so the balance lies at least as far from 0.5 as every such share.
    """
    yes, no = (votes == YES).sum(axis=0), (votes == NO).sum(axis=0)
    two_way = np.flatnonzero((yes > 0) & (no > 0))
    if not len(two_way):
        return None
    shares = yes[two_way] / (yes[two_way] + no[two_way])
    if not ((shares < 0.5).all() or (shares > 0.5).all()):
        return None
    k = int(np.argmax(np.abs(shares - 0.5)))
    j = two_way[k]
    return float(shares[k]), float((yes[j] + no[j]) / len(votes))


def _constant_kind(votes: np.ndarray) -> str:
    return "never votes" if (votes == ABSTAIN).all() else "gives the same vote on every record"


def fit_label_model(matrix: VoteMatrix, balance: float | None = None) -> LabelModelFit:
    """The label model on the informative sources (constant ones dropped), degenerate input and collapse handled."""
    constant = _constant(matrix)
    warnings = [f"source {name} {_constant_kind(matrix.votes[:, j])}: it carries no information and is left out"
                for j, name in enumerate(matrix.sources) if constant[j]]
    informative = ~constant
    if informative.sum() < 2:
        fit = _degenerate(matrix, informative, balance)
        return LabelModelFit(fit.p_yes, fit.prior, fit.accuracy, warnings + fit.warnings,
                             balance_known=fit.balance_known)
    used = _subset(matrix, informative)
    counts = outcome_counts(used.votes, used.conf)
    model = DawidSkene(class_balance=balance).fit(counts)
    accuracy = np.full(len(matrix.sources), 0.5)
    accuracy[informative] = model.source_accuracy()
    if informative.sum() == 2:
        warnings.append("two informative sources: the estimates rest on the assumption that both are better "
                        "than chance")
    bound, coverage = _balance_bound(used.votes) or (None, 0.0)
    crossed = None
    if balance is None and bound is not None and (model.prior - bound) * (bound - 0.5) < 0 and \
            abs(model.prior - bound) > BOUND_MARGIN:
        # a narrow rule ("X, not Y") can vote on more records of one class than of the other, so its share may
        # not carry the balance across 0.5; one that votes on most records (a teacher's answers) may, unless the fit
        # puts the balance far on the other side: a source right on most yes records and on fewer no records (nearest
        # of a few examples) votes yes on more than half of a rare question's records
        if (model.prior - 0.5) * (bound - 0.5) > 0 or (coverage >= BROAD_SOURCE and
                                                        abs(model.prior - 0.5) < NEAR_HALF):
            warnings.append(f"the estimated class balance {model.prior:.3f} lies beyond every two-way source's share "
                            f"of yes ({bound:.3f}), which sources better than chance cannot give: held at {bound:.3f}")
            model = DawidSkene(class_balance=bound).fit(counts)
        else:
            crossed = (f"its class balance {model.prior:.3f} and every two-way source's share of yes (to {bound:.3f}, "
                       f"from a source voting on {coverage:.0%} of the records) lie on opposite sides of 0.5")
    p_yes = model.predict_proba(counts)
    n = len(p_yes)
    away = _explained_away(used, model.source_accuracy(), p_yes, given=balance is not None)
    why = (crossed if crossed else
           "most votes came from sources it rated below chance" if model.collapsed(counts) else
           away if away else
           f"the no class holds under {MIN_CLASS_RECORDS:g} records' worth of probability, so its rates are only "
           "the prior's" if balance is None and (1 - model.prior) * n < MIN_CLASS_RECORDS else
           "it gives every record the same label although the sources vary" if _constant_labels(p_yes, model.prior)
           else None)
    if why and balance is None:
        return LabelModelFit(weighted_vote(used, 0.5), 0.5, accuracy, warnings,
                             f"the label model collapsed ({why}); weighted vote is used instead, with the class "
                             "balance unknown (0.5)", balance_known=False)
    if why:
        return LabelModelFit(at_balance(weighted_vote(used, balance), balance), balance, accuracy, warnings,
                             f"the label model collapsed ({why}); weighted vote is used instead, its P(yes) moved "
                             "to the stated class balance")
    return LabelModelFit(p_yes, model.prior, accuracy, warnings)


def _explained_away(matrix: VoteMatrix, accuracy: np.ndarray, p_yes: np.ndarray, given: bool = False) -> str | None:
    """Why the fit explained a class away, or None: two or more sources only ever name that class, and the fit
    either rates every one of them mostly wrong or gives no record they named that class even odds of it (a
    list with a handful of votes can keep a good rating then). With the balance estimated, the fit moved it
    until their votes count for nothing; with the balance `given`, the fit found no other way to explain them.
    Data teams' keyword lists are such sources. On a rare question they can truly be mostly wrong (praise
    words in long negative reviews: 4-13 % right on the label suite's third hold-out), but the fit's balance
    there (0.1-0.2 % for 2-4 %) is no answer either: weighted vote is the safer ranking (with the balance
    unknown unless given, so that the gate asks for the rate)."""
    yes, no = (matrix.votes == YES).sum(axis=0), (matrix.votes == NO).sum(axis=0)
    why = ", even at the stated class balance" if given else ": the estimated class balance explains their votes away"
    for only, name, vote, p_class in (((yes > 0) & (no == 0), "yes", YES, p_yes),
                                      ((no > 0) & (yes == 0), "no", NO, 1.0 - p_yes)):
        if only.sum() < 2:
            continue
        names = ", ".join(s for s, keep in zip(matrix.sources, only) if keep)
        if (accuracy[only] < 0.5).all():
            return f"every source that only votes {name} ({names}) came out mostly wrong{why}"
        if p_class[(matrix.votes[:, only] == vote).any(axis=1)].max() < 0.5:
            return (f"no record that the sources only voting {name} ({names}) named comes out likelier {name} "
                    f"than not{why}")
    return None


def _tie_warning(p_yes: np.ndarray, labels: np.ndarray, prior: float, silent: np.ndarray, given: bool) -> str | None:
    """A warning when the labels' yes rate lands far from the class balance because the balance's count falls
    inside one large group of records with the same P(yes), which the decision rule labels alike."""
    n = len(labels)
    rate = float(labels.mean()) if n else 0.0
    if not n or not far_from_balance(rate, prior):  # far: then one tie group decided it
        return None
    # the group the balance's count fell inside sits at the cut: the last one in (too many yes) or first one out
    value = p_yes[labels].min() if rate > prior else p_yes[~labels].max()
    members = p_yes == value
    who = "records nobody voted on" if silent[members].all() else "records"
    return (f"{rate:.0%} of the records are labelled yes for a class balance of {prior:.0%}: {members.sum():,} "
            f"{who} ({members.mean():.0%}) share one P(yes) ({value:.3f}) and are labelled alike; "
            + ("" if given else "state the rate you expect (`expected_yes_rate`, `--class-balance`) or ")
            + "add a source that votes on those records")


def _constant_labels(p_yes: np.ndarray, prior: float) -> bool:
    """The decision rule labels every record alike (the caller has checked that both classes hold records)."""
    labels, _ = prevalence_labels(p_yes, prior)
    return bool(labels.all() or not labels.any())


def _scores(method: str, matrix: VoteMatrix, prior: float) -> np.ndarray:
    return {"weighted": weighted_vote, "majority": majority_vote, "snorkel": snorkel_vote}[method](matrix, prior)


def _choose(method: str, candidates: dict[str, dict[str, float]], usable: list[str], gold_given: bool,
            gold_n: int, any_yes: bool) -> tuple[str, str]:
    if method != "auto":
        return method, "chosen by the caller"
    if candidates:
        key = "f1" if any_yes else "accuracy"
        chosen = max(usable, key=lambda name: candidates[name][key])  # ties: earlier (label model) wins
        scores = ", ".join(f"{name} {candidates[name][key]:.3f}" for name in usable)
        return chosen, f"best {key} on {gold_n} gold records ({scores})"
    if gold_given:
        return "label_model", "no gold record is among the votes; the label model is the default"
    return "label_model", "no gold labels; the label model is the default"


def combine(votes: pa.Table | VoteMatrix, method: str = "auto", gold: pa.Table | None = None,
            weights: dict[str, float] | None = None, class_balance: float | None = None) -> CombineResult:
    """Combine votes (a votes table, or one already parsed by `vote_matrix`) into `id`, `p_yes`, `label`.

    With `gold` (`id`, `label`), `auto` picks the method by F1 on it; `weights` apply to a table only;
    `class_balance` (P(yes), when known) replaces the label model's estimate for every method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown combine method {method!r}; use one of: {', '.join(METHODS)}")
    if class_balance is not None and not 0.0 <= class_balance <= 1.0:
        raise ValueError(f"class balance {class_balance} must be a share of yes between 0 and 1")
    matrix = votes if isinstance(votes, VoteMatrix) else vote_matrix(votes, weights)
    fit = fit_label_model(matrix, class_balance)
    prior = fit.prior
    scores = {"label_model": fit.p_yes}
    candidates: dict[str, dict[str, float]] = {}
    gold_ids, gold_labels = gold_rows(matrix.ids, gold) if gold is not None else (np.zeros(0, int), None)
    usable = [name for name in CANDIDATES if name != "snorkel" or len(matrix.sources) >= 3]
    for name in usable if len(gold_ids) else ():
        if name not in scores:
            scores[name] = _scores(name, matrix, prior)
        candidates[name] = binary_scores(gold_labels, prevalence_labels(scores[name], prior)[0][gold_ids])
    chosen, reason = _choose(method, candidates, usable, gold is not None, len(gold_ids),
                             bool(gold_labels is not None and gold_labels.any()))
    if chosen == "label_model" and fit.fallback:
        reason = f"{reason}; {fit.fallback}"
    p_yes = scores[chosen] if chosen in scores else _scores(chosen, matrix, prior)
    labels, threshold = prevalence_labels(p_yes, prior)
    tie = _tie_warning(p_yes, labels, prior, (matrix.votes == ABSTAIN).all(axis=1), class_balance is not None)
    probs = pa.table({"id": matrix.ids, "p_yes": pa.array(p_yes.astype(np.float32)),
                      "label": pa.array(labels.astype(np.int8))})
    return CombineResult(
        probs=probs, method=chosen, reason=reason,
        source_accuracy={name: round(float(a), 4) for name, a in zip(matrix.sources, fit.accuracy)},
        coverage={name: round(float((matrix.votes[:, j] >= 0).mean()) if len(matrix.votes) else 0.0, 4)
                  for j, name in enumerate(matrix.sources)},
        prior=round(prior, 4), threshold=round(threshold, 4), candidates=candidates,
        warnings=fit.warnings + ([fit.fallback] if fit.fallback else []) + ([tie] if tie else []),
        balance_known=fit.balance_known, labels_follow_balance=tie is None,
    )

