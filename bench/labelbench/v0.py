"""The combiner as it was before issue 12 (commit 2c4d33a, labeling/label_model.py + its expected-F1 rule),
kept verbatim as the "assay-v0" row of the suite so before/after are measured on the same records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ABSTAIN, NO, YES = 0, 1, 2  # outcome columns per source
# Dirichlet pseudo-counts over (abstain, no, yes) for class no and class yes (votes right two times in
# three), each worth `prior_share` of the records. For a rare class this prior is strong: the yes class is
# the one the yes votes point at — what keeps EM from settling on a correlated, commoner class (toxic,
# when asked for `threat`). The same weight smooths the class prior (Beta(s, s)).
PSEUDO = np.array([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0]])


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
    counts[..., YES] = np.where(votes == 1, weight, 0.0)
    counts[..., NO] = np.where(votes == 0, weight, 0.0)
    counts[..., ABSTAIN] = 1.0 - counts[..., YES] - counts[..., NO]
    return counts.reshape(n, 3 * m)


@dataclass
class DawidSkene:
    """Binary Dawid–Skene EM with abstain as an outcome, soft votes and an estimated class prior."""

    prior_share: float = 0.025  # weight of each source's Dirichlet prior, as a share of the records
    max_iter: int = 200
    tol: float = 1e-6
    prior: float = field(default=0.5, init=False)
    theta: np.ndarray | None = field(default=None, init=False)  # (m, 2, 3): P(outcome | class)
    iterations: int = field(default=0, init=False)

    def fit(self, counts: np.ndarray) -> DawidSkene:
        """Estimate the class prior and per-source outcome distributions from `outcome_counts(...)`."""
        m = counts.shape[1] // 3
        posterior = self._start(counts, m)
        for self.iterations in range(1, self.max_iter + 1):  # noqa: B020 (the old combiner, kept verbatim)
            self._m_step(counts, posterior, m)
            updated = self.predict_proba(counts)
            change = float(np.max(np.abs(updated - posterior))) if len(updated) else 0.0
            posterior = updated
            if change < self.tol:
                break
        self._m_step(counts, posterior, m)
        return self

    def predict_proba(self, counts: np.ndarray) -> np.ndarray:
        """P(yes) per record (float64, shape (n,))."""
        if self.theta is None:
            raise RuntimeError("fit the model first")
        log_theta = np.log(self.theta).transpose(0, 2, 1).reshape(-1, 2)  # (3m, 2): rows source-major
        scores = counts @ log_theta.astype(np.float32)
        log_odds = scores[:, 1].astype(np.float64) - scores[:, 0] + np.log(self.prior / (1 - self.prior))
        return 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50, 50)))

    def source_accuracy(self) -> np.ndarray:
        """Per source: estimated P(vote right | it voted), under the estimated prior."""
        theta, prior = self.theta, self.prior
        right = prior * theta[:, 1, YES] + (1 - prior) * theta[:, 0, NO]
        voted = prior * (theta[:, 1, YES] + theta[:, 1, NO]) + (1 - prior) * (theta[:, 0, YES] + theta[:, 0, NO])
        return right / np.maximum(voted, 1e-12)

    def _start(self, counts: np.ndarray, m: int) -> np.ndarray:
        """Majority-vote posterior (soft), the neutral 0.5 where no source voted."""
        per_source = counts.reshape(len(counts), m, 3)
        yes, no = per_source[..., YES].sum(axis=1), per_source[..., NO].sum(axis=1)
        return (yes + 0.5) / (yes + no + 1.0)

    def _m_step(self, counts: np.ndarray, posterior: np.ndarray, m: int) -> None:
        s = max(1.0, self.prior_share * len(posterior))
        self.prior = float((posterior.sum() + s) / (len(posterior) + 2 * s))
        by_class = np.stack([1.0 - posterior, posterior], axis=1).astype(np.float32)  # (n, 2)
        totals = (counts.T @ by_class).reshape(m, 3, 2).transpose(0, 2, 1).astype(np.float64)  # (m, 2, 3)
        totals += s * PSEUDO  # MAP estimate
        self.theta = totals / totals.sum(axis=2, keepdims=True)


def v0_combine(votes: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """P(yes), labels and estimated prior exactly as `combine(method="label_model")` gave them before."""
    counts = outcome_counts(votes, conf)
    model = DawidSkene().fit(counts)
    p_yes = model.predict_proba(counts)
    if len(p_yes) == 0:
        return p_yes, p_yes > 0, model.prior
    ordered = np.sort(p_yes)[::-1]
    expected_f1 = 2 * np.cumsum(ordered) / (np.arange(1, len(ordered) + 1) + ordered.sum())
    return p_yes, p_yes >= float(ordered[int(np.argmax(expected_f1))]), model.prior
