"""Assay's label model: a class-conditional (Dawid–Skene) EM model for yes/no votes, in vectorised numpy.

Each source j has, per true class y, a distribution over its three outcomes: abstain, no, yes
(`theta[j, y, outcome]`). Modelling abstain as an outcome is what lets one-way sources count: a keyword
rule that only ever votes yes, but fires on 20% of the yeses and 0.2% of the nos, is strong evidence when
it fires and weak evidence of "no" when it does not; a teacher that only records "no" answers likewise.

A vote with confidence c (the source's probability that the vote is right, in [0.5, 1]) is a soft vote:
it counts as the vote with weight w = 2c - 1 and as an abstain with weight 1 - w, in the E-step
(log-likelihood) and in the M-step (fractional counts) alike; c = 1 is a hard vote, c = 0.5 an abstain.

What keeps EM from collapsing (issue 12):
- it starts from majority vote (records without votes at 0.5);
- the pseudo-counts are fixed (PRIOR_COUNT, BALANCE_COUNT), so they do not grow with n and a rare class
  (under 1 %) can be estimated; the outcome prior leans each class towards the vote that names it;
- every source stays better than chance: a yes vote may not be likelier under "no" than under "yes", nor a
  no vote under "yes" (the M-step projects such a source's rate onto "no evidence"), unless the data says
  strongly otherwise for a two-way source (STRONG_Z); when most of the votes come from sources the data
  pushes below chance, the fit is reported as collapsed and `combine` falls back to weighted vote, saying so;
- sources that agree far beyond chance on much the same records (duplicates, copies) share one source's
  weight in the likelihood.
Every step is one matrix product over a (records x 3·sources) matrix of fractional outcome counts, so a
million records and ten sources take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OUT_ABSTAIN, OUT_NO, OUT_YES = 0, 1, 2  # outcome columns per source (not vote values: see votes.py)
# Dirichlet pseudo-counts over (abstain, no, yes) per source for class no and class yes: each class leans
# towards the vote that names it (a Beta prior on accuracy: sources better than chance), worth 8 records
# per source whatever n is. Chosen on the suite's tune part (1 / [1, 2, 1] / 2x / 3x / 10x / 30x tried).
PRIOR_COUNT = 2.0 * np.array([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0]])
BALANCE_COUNT = 1.0  # Beta pseudo-count per class for the class prior
DUPLICATE_KAPPA = 0.7  # sources agreeing this far beyond chance (Cohen's kappa where both vote) ...
OVERLAP = 0.5  # ... on much the same records (Jaccard of the records each votes on) count as copies
SAME_RECORDS = 0.9  # one-way sources (kappa undefined) count as copies when they fire on the same records
COLLAPSE_SHARE = 0.5  # share of the votes from sources pushed below chance that marks a collapsed fit
STRONG_Z = 5.0  # a two-way source this many standard errors below chance stays there (the data says so strongly)


def logistic(log_odds: np.ndarray) -> np.ndarray:
    """P from log-odds, clipped to ±50 so that exp cannot overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50, 50)))


def outcome_counts(votes: np.ndarray, conf: np.ndarray | None = None) -> np.ndarray:
    """Fractional outcome counts, shape (n, 3·m) float32: per source [abstain, no, yes] summing to 1.

    `votes` is (n, m) int8 in {-1, 0, 1}; `conf` (n, m) float in [0.5, 1] or NaN (NaN: a hard vote).
    """
    n, m = votes.shape
    weight = np.ones((n, m), dtype=np.float32)
    if conf is not None:
        soft = np.clip(2.0 * np.asarray(conf, dtype=np.float32) - 1.0, 0.0, 1.0)
        weight = np.where(np.isnan(soft), 1.0, soft).astype(np.float32)
    counts = np.zeros((n, m, 3), dtype=np.float32)
    counts[..., OUT_YES] = np.where(votes == 1, weight, 0.0)
    counts[..., OUT_NO] = np.where(votes == 0, weight, 0.0)
    counts[..., OUT_ABSTAIN] = 1.0 - counts[..., OUT_YES] - counts[..., OUT_NO]
    return counts.reshape(n, 3 * m)


@dataclass
class DawidSkene:
    """Binary Dawid–Skene EM with abstain as an outcome, soft votes, an estimated (or given) class prior,
    better-than-chance sources and shared weight for dependent sources."""

    max_iter: int = 200
    tol: float = 1e-6
    class_balance: float | None = None  # hold the prior at this value instead of estimating it
    prior: float = field(default=0.5, init=False)
    theta: np.ndarray | None = field(default=None, init=False)  # (m, 2, 3): P(outcome | class)
    weights: np.ndarray | None = field(default=None, init=False)  # (m,): share of a source in the likelihood
    below_chance: np.ndarray | None = field(default=None, init=False)  # (m,): the data pushed it below chance
    iterations: int = field(default=0, init=False)

    def fit(self, counts: np.ndarray) -> DawidSkene:
        """Estimate the class prior and per-source outcome distributions from `outcome_counts(...)`."""
        m = counts.shape[1] // 3
        self.weights = dependency_weights(counts)
        self._em(counts, m)
        return self

    def predict_proba(self, counts: np.ndarray) -> np.ndarray:
        """P(yes) per record (float64, shape (n,))."""
        if self.theta is None:
            raise RuntimeError("fit the model first")
        log_theta = (np.log(self.theta) * self.weights[:, None, None]).transpose(0, 2, 1).reshape(-1, 2)
        scores = counts @ log_theta.astype(np.float32)
        log_odds = scores[:, 1].astype(np.float64) - scores[:, 0] + np.log(self.prior / (1 - self.prior))
        return logistic(log_odds)

    def source_accuracy(self) -> np.ndarray:
        """Per source: estimated P(vote right | it voted), under the estimated prior."""
        theta, prior = self.theta, self.prior
        right = prior * theta[:, 1, OUT_YES] + (1 - prior) * theta[:, 0, OUT_NO]
        voted = (prior * (theta[:, 1, OUT_YES] + theta[:, 1, OUT_NO])
                 + (1 - prior) * (theta[:, 0, OUT_YES] + theta[:, 0, OUT_NO]))
        return right / np.maximum(voted, 1e-12)

    def collapsed(self, counts: np.ndarray) -> bool:
        """Whether most of the cast votes come from sources the data pushed below chance."""
        m = counts.shape[1] // 3
        cast = counts.reshape(len(counts), m, 3)[..., OUT_NO:].sum(axis=(0, 2))
        return bool(cast.sum() > 0 and cast[self.below_chance].sum() > COLLAPSE_SHARE * cast.sum())

    def _em(self, counts: np.ndarray, m: int) -> None:
        per_source = counts.reshape(len(counts), m, 3) * self.weights[None, :, None]
        yes, no = per_source[..., OUT_YES].sum(axis=1), per_source[..., OUT_NO].sum(axis=1)
        posterior = (yes + 0.5) / (yes + no + 1.0)  # majority-vote start, 0.5 where nobody voted
        for iteration in range(1, self.max_iter + 1):
            self.iterations = iteration
            self._m_step(counts, posterior, m)
            updated = self.predict_proba(counts)
            change = float(np.max(np.abs(updated - posterior))) if len(updated) else 0.0
            posterior = updated
            if change < self.tol:
                break
        self._m_step(counts, posterior, m)

    def _m_step(self, counts: np.ndarray, posterior: np.ndarray, m: int) -> None:
        if self.class_balance is None:
            self.prior = float((posterior.sum() + BALANCE_COUNT) / (len(posterior) + 2 * BALANCE_COUNT))
        else:
            self.prior = float(np.clip(self.class_balance, 1e-6, 1 - 1e-6))
        by_class = np.stack([1.0 - posterior, posterior], axis=1).astype(np.float32)  # (n, 2)
        totals = (counts.T @ by_class).reshape(m, 3, 2).transpose(0, 2, 1).astype(np.float64)  # (m, 2, 3)
        totals += PRIOR_COUNT
        self.theta, self.below_chance = better_than_chance(totals)


def better_than_chance(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """theta from per-class outcome counts (m, 2, 3), with each vote no likelier under the wrong class unless
    the data says strongly otherwise.

    Where a yes vote comes out likelier under "no" (or a no vote under "yes"), both classes get the pooled
    rate of that outcome: the vote then carries no evidence. A two-way source whose vote is likelier under the
    wrong class by at least STRONG_Z standard errors keeps its rates instead (a one-way source does not: a
    keyword list pushed below chance is how a fit explains a class away). Returns theta and which sources
    came out below chance (moved or kept so).
    """
    theta = totals / totals.sum(axis=2, keepdims=True)
    cast = totals - np.broadcast_to(PRIOR_COUNT, totals.shape)
    two_way = (cast[:, :, OUT_YES].sum(axis=1) >= 1.0) & (cast[:, :, OUT_NO].sum(axis=1) >= 1.0)
    per_class = totals.sum(axis=2)
    below = np.zeros(len(theta), dtype=bool)
    for outcome, right_class in ((OUT_YES, 1), (OUT_NO, 0)):
        gap = theta[:, 1 - right_class, outcome] - theta[:, right_class, outcome]
        wrong = gap > 0
        if wrong.any():
            pooled = totals[:, :, outcome].sum(axis=1) / per_class.sum(axis=1)
            z = gap / np.sqrt(pooled * (1 - pooled) * (1 / per_class[:, 0] + 1 / per_class[:, 1]))
            move = wrong & ~(two_way & (z >= STRONG_Z))
            theta[move, :, outcome] = pooled[move, None]
            below |= wrong & (cast[:, :, outcome].sum(axis=1) >= 1.0)  # a vote never cast is no evidence
    theta[:, :, OUT_ABSTAIN] = 1.0 - theta[:, :, OUT_NO] - theta[:, :, OUT_YES]
    return np.clip(theta, 1e-9, 1.0), below


def dependency_weights(counts: np.ndarray) -> np.ndarray:
    """Per source 1 / (size of its group of copies), groups being connected components of the pairs that vote
    on much the same records (Jaccard >= OVERLAP) with Cohen's kappa >= DUPLICATE_KAPPA where both vote, or
    (one-way sources, whose kappa is undefined) that fire on the same records (Jaccard >= SAME_RECORDS).

    Model-free on purpose: a fitted model takes a block of copies for the truth and rates them near-perfect.
    """
    m = counts.shape[1] // 3
    if m < 3:
        return np.ones(m)
    per_source = counts.reshape(len(counts), m, 3)
    yes, no = per_source[..., OUT_YES], per_source[..., OUT_NO]
    both = (yes + no).T @ (yes + no)  # (m, m) records both voted on (fractional)
    agreement = (yes.T @ yes + no.T @ no) / np.maximum(both, 1e-9)
    yes_share = (yes.T @ (yes + no)) / np.maximum(both, 1e-9)  # [a, b]: a's share of yes where both vote
    chance = yes_share * yes_share.T + (1 - yes_share) * (1 - yes_share.T)
    kappa = np.where(chance < 0.999, (agreement - chance) / np.maximum(1 - chance, 1e-9), 0.0)
    cast = both.diagonal()
    jaccard = both / np.maximum(np.add.outer(cast, cast) - both, 1e-9)  # they vote on the same records
    one_way_twins = (chance >= 0.999) & (agreement >= 0.999) & (jaccard >= SAME_RECORDS)
    copies = ((kappa >= DUPLICATE_KAPPA) & (jaccard >= OVERLAP)) | one_way_twins
    np.fill_diagonal(copies, True)
    group = np.arange(m)
    for _ in range(m):  # connected components by min-label propagation
        group = np.array([group[copies[j]].min() for j in range(m)])
    return 1.0 / np.bincount(group, minlength=m)[group]
