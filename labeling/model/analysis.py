"""`VoteAnalysis`: one question's votes, parsed once, asked many questions (as Snorkel's `LFAnalysis`)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa

from ..gold import gold_rows
from ..metrics import binary_scores
from ..votes import ABSTAIN, NO, YES, VoteMatrix
from .combine import CombineResult


class VoteAnalysis:
    """Coverage, overlap, conflict, agreement and gold scores of the sources of one `VoteMatrix`."""

    def __init__(self, matrix: VoteMatrix):
        self.matrix = matrix

    @cached_property
    def cast(self) -> np.ndarray:
        """(n, m) bool: the source voted on the record."""
        return self.matrix.votes != ABSTAIN

    def source_stats(self) -> dict[str, dict[str, float]]:
        """Per source: coverage, overlap (it and another voted), conflict (another voted the opposite), yes, no."""
        votes, cast = self.matrix.votes, self.cast
        n = max(len(votes), 1)
        stats = {}
        for j, name in enumerate(self.matrix.sources):
            others = np.delete(votes, j, axis=1)
            overlap = cast[:, j] & (others != ABSTAIN).any(axis=1)
            opposite = np.where(votes[:, j:j + 1] == YES, others == NO, others == YES)
            conflict = cast[:, j] & opposite.any(axis=1)
            stats[name] = {"coverage": cast[:, j].sum() / n, "overlap": overlap.sum() / n,
                           "conflict": conflict.sum() / n, "yes": (votes[:, j] == YES).sum() / n,
                           "no": (votes[:, j] == NO).sum() / n}
        return {name: {k: round(float(v), 4) for k, v in s.items()} for name, s in stats.items()}

    def agreement(self) -> np.ndarray:
        """(m, m) pairwise agreement among records both sources voted on (NaN where they never overlap)."""
        votes, cast = self.matrix.votes, self.cast
        m = len(self.matrix.sources)
        agreement = np.full((m, m), np.nan)
        for a in range(m):
            for b in range(m):
                both = cast[:, a] & cast[:, b]
                if both.any():
                    agreement[a, b] = (votes[both, a] == votes[both, b]).mean()
        return agreement

    def gold_comparison(self, result: CombineResult, gold: pa.Table) -> dict[str, dict[str, float]]:
        """Measured scores on the gold records: each source where it voted, every method, and the combined label."""
        rows, truth = gold_rows(self.matrix.ids, gold)
        if not len(rows):
            return {}
        scores = {}
        for j, name in enumerate(self.matrix.sources):  # a source alone: its abstains count as no
            scores[f"source:{name}"] = {**binary_scores(truth, self.matrix.votes[rows, j] == YES),
                                        "coverage": round(float(self.cast[rows, j].mean()), 4)}
        scores.update(result.candidates)
        scores["combined"] = binary_scores(truth, result.probs.column("label").to_numpy()[rows] == 1)
        return scores
