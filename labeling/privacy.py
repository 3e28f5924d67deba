"""EU on-prem guarantees of the LLM client: endpoint residency, PII masking and the audit log.

Nothing here opens a connection: the residency check looks at the URL only (no DNS lookup), so a
refused endpoint never sees a packet. See docs/privacy.md for what is and is not guaranteed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from assay.schemas.settings import Settings

# Host names that stay inside an organisation's network by convention (RFC 6762, RFC 8375, k8s, cloud VPCs).
INTERNAL_SUFFIXES = (".internal", ".local", ".lan", ".intranet", ".corp", ".home.arpa", ".svc", ".cluster.local")


class ResidencyError(PermissionError):
    """An endpoint outside the data-residency allow-list; raised before any connection is opened."""


def _host(url: str) -> str:
    host = urlsplit(url if "://" in url else f"//{url}").hostname
    if not host:
        raise ResidencyError(f"endpoint {url!r} has no host name (fix: write it as http(s)://host[:port]/v1)")
    return host.lower().rstrip(".")


def _is_private_host(host: str) -> bool:
    """Loopback, private, link-local or unique-local IPs; localhost, single-label and internal-suffix names."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(INTERNAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def _matches(url: str, host: str, entry: str) -> bool:
    """Does the allow-list `entry` (URL prefix, host name or CIDR range) cover this endpoint?"""
    entry = entry.strip()
    if "://" in entry:
        return url.rstrip("/").lower().startswith(entry.rstrip("/").lower())
    if "/" in entry:
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    return host == entry.lower().rstrip(".")


def check_endpoint(url: str, settings: Settings) -> None:
    """Raise ResidencyError when `url` is not allowed by the residency settings (call before connecting)."""
    host = _host(url)
    if settings.allowed_endpoints:
        if any(_matches(url, host, entry) for entry in settings.allowed_endpoints):
            return
        raise ResidencyError(
            f"endpoint {url} (host {host}) is not in allowed_endpoints {settings.allowed_endpoints}; "
            f"nothing was sent (fix: add '{host}' or the URL to allowed_endpoints in your assay.yaml, "
            "or point the question's base_url at an allowed endpoint)")
    if settings.residency == "on-prem" and not _is_private_host(host):
        raise ResidencyError(
            f"endpoint {url} (host {host}) is outside the on-prem network and residency is 'on-prem'; "
            "nothing was sent (fix: list it in allowed_endpoints in your assay.yaml if it is inside your "
            "network, set residency: cloud to allow external endpoints, or use an on-prem base_url)")


# ---- masking --------------------------------------------------------------------------------------

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


# ---- audit ----------------------------------------------------------------------------------------

def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JsonlLog:
    """An append-only JSONL file that several threads write to."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        data = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(data)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog(JsonlLog):
    """What left the machine: one line per request sent (never the text or the key)."""

    def record(self, *, endpoint: str, model: str, question_id: str, source: str, record_id: str,
               sent_text: str, tokens_in: int, tokens_out: int, masked: dict[str, int], attempts: int,
               outcome: str, mode: str) -> None:
        self.append({
            "time": now_iso(), "endpoint": endpoint, "model": model, "mode": mode, "question_id": question_id,
            "source": source, "record_id_sha256": sha256(record_id), "text_sha256": sha256(sent_text),
            "chars": len(sent_text), "tokens_in": tokens_in, "tokens_out": tokens_out, "masked": masked,
            "attempts": attempts, "outcome": outcome,
        })
