"""PII masking before a text leaves the process: e-mails, IBANs, phone numbers and user patterns."""

from __future__ import annotations

import re
from dataclasses import dataclass

_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_IBAN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
# International (+49 30 1234567, 0049-30-1234567, +44 (0)20 7946 0958), national with trunk 0
# ((030) 123 4567, 030/1234567, 06 12 34 56 78) and North American (555-123-4567, (555) 123-4567).
_PHONE = (r"(?<![\w+])(?:(?:\+|00)\d{1,3}[\s./-]?(?:\(0\)[\s./-]?)?\(?\d{1,5}\)?(?:[\s./-]?\d{2,}){1,5}"
          r"|\(?0\d{1,5}\)?[\s./-]?\d{2,}(?:[\s./-]?\d{2,}){0,4}"
          r"|\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4})(?!\w)")
_PHONE_DIGITS = (8, 15)
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
BUILTIN_MASKS = {"email": _EMAIL, "iban": _IBAN, "phone": _PHONE}


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    return _PHONE_DIGITS[0] <= digits <= _PHONE_DIGITS[1] and not _DATE.fullmatch(candidate)


@dataclass(frozen=True)
class Masked:
    """A masked text and how many matches of each kind were replaced."""

    text: str
    counts: dict[str, int]


class Masker:
    """Replace e-mails, IBANs, phone numbers and user patterns with [EMAIL], [IBAN], [PHONE], [NAME]."""

    def __init__(self, extra_patterns: dict[str, str] | None = None):
        # Order matters: e-mails and IBANs first, so their digits are not taken for phone numbers.
        self.patterns = {name: re.compile(rx) for name, rx in {**BUILTIN_MASKS, **(extra_patterns or {})}.items()}

    def mask(self, text: str) -> Masked:
        counts: dict[str, int] = {}
        for name, pattern in self.patterns.items():
            tag = f"[{name.upper()}]"

            def replace(match: re.Match, name: str = name, tag: str = tag) -> str:
                if name == "phone" and not _looks_like_phone(match[0]):
                    return match[0]
                counts[name] = counts.get(name, 0) + 1
                return tag

            text = pattern.sub(replace, text)
        return Masked(text, counts)
