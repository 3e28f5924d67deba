"""The rules source: the spec's keywords and regular expressions.

Policy when yes and no rules both match a text: **yes wins**. Yes rules name what the question is about
("idiot", "kill you"), no rules are weaker context ("thanks", "citation"); "thanks, you idiot" is still
an insult. No match at all: abstain. No confidence is given; the label model learns how far to trust
each direction of each rules source from the data.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from assay.schemas.questions import RulesSource

from ..votes import ABSTAIN, NO, YES, vote_table


def _compile(keywords: list[str], patterns: list[str], case_sensitive: bool, word_boundary: bool) -> re.Pattern | None:
    """One regular expression matching any keyword (escaped, optionally as whole words) or pattern."""
    parts = [re.escape(k) for k in keywords]
    if word_boundary and parts:
        parts = [rf"(?<!\w)(?:{'|'.join(sorted(parts, key=len, reverse=True))})(?!\w)"]
    parts += [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), 0 if case_sensitive else re.IGNORECASE) if parts else None


class RulesVoter:
    """Votes yes when a yes rule matches, else no when a no rule matches, else abstains."""

    def __init__(self, source: RulesSource):
        self.name = source.name
        self.yes = _compile(source.yes_keywords, source.yes_patterns, source.case_sensitive, source.word_boundary)
        self.no = _compile(source.no_keywords, source.no_patterns, source.case_sensitive, source.word_boundary)

    def vote_one(self, text: str) -> int:
        """The vote on one text."""
        if self.yes is not None and self.yes.search(text):
            return YES
        if self.no is not None and self.no.search(text):
            return NO
        return ABSTAIN

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """One vote per record."""
        return vote_table(ids, np.fromiter((self.vote_one(t) for t in texts), dtype=np.int8, count=len(texts)))
