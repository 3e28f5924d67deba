"""Request- and token-per-minute limits shared by the worker threads of one teacher, and retry delays."""

from __future__ import annotations

import random
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any


class _Rate:
    """Generic cell rate algorithm: `per_minute` units a minute, bursts of up to `burst_s` seconds' worth."""

    def __init__(self, per_minute: int, burst_s: float):
        self.interval = 60.0 / per_minute
        self.tolerance = max(burst_s, self.interval)
        self.theoretical_arrival = 0.0

    def reserve(self, units: float, now: float) -> float:
        """Book `units` and return how long the caller must wait before using them."""
        self.theoretical_arrival = max(self.theoretical_arrival, now) + units * self.interval
        return max(0.0, self.theoretical_arrival - self.tolerance - now)


class RateLimiter:
    """Blocks each caller until both the request and the token rate allow it (None = unlimited)."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                 burst_s: float = 1.0):
        self._requests = _Rate(requests_per_minute, burst_s) if requests_per_minute else None
        self._tokens = _Rate(tokens_per_minute, burst_s) if tokens_per_minute else None
        self._lock = threading.Lock()

    def acquire(self, tokens: int) -> float:
        """Wait for one request of about `tokens` tokens; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            wait = max(self._requests.reserve(1, now) if self._requests else 0.0,
                       self._tokens.reserve(tokens, now) if self._tokens else 0.0)
        if wait > 0:
            time.sleep(wait)
        return wait


def retry_after_s(response: Any) -> float | None:
    """The server's requested delay from `retry-after-ms` or `Retry-After` (seconds or an HTTP date) of an
    HTTP response (anything with `.headers`), or None."""
    if response is None:
        return None
    headers = response.headers
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


_JITTER = random.Random()


def backoff_s(attempt: int, base_s: float, max_s: float, retry_after: float | None) -> float:
    """Delay before retry number `attempt` (1-based): the server's Retry-After when given (never less; a
    little jitter on top so waiting workers do not return together), else exponential backoff with jitter,
    uniform in [c/2, c] where c = min(max_s, base_s * 2^(attempt-1))."""
    if retry_after is not None:
        return retry_after + _JITTER.uniform(0, 0.1 * base_s)
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    return _JITTER.uniform(ceiling / 2, ceiling)
