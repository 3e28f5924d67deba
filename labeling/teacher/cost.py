"""Token cost and the hard budget cap: reserve an estimate before a request, settle the real cost after.

The settled spend of a run folder is kept in SQLite beside the run (`llm/ledger.sqlite`), so a resumed
run still stops at the same cap; every teacher of one process that shares the run folder shares the
budget. Reservations live in memory only (a killed process leaves none behind).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

from .cache import connect
from .settings import Price

BATCH_DISCOUNT = 0.5
CHARS_PER_TOKEN_LOW = 3.0  # English averages ~4 characters a token; 3 over-estimates on purpose
MESSAGE_OVERHEAD_TOKENS = 8


def estimate_prompt_tokens(prompt: str) -> int:
    """A deliberately high estimate of the prompt tokens, for reserving budget and token-rate limits."""
    return math.ceil(len(prompt) / CHARS_PER_TOKEN_LOW) + MESSAGE_OVERHEAD_TOKENS


def cost_usd(price: Price | None, tokens_in: int, tokens_out: int, batch: bool = False) -> float:
    """USD for one request at `price` (0 when the price is unknown, e.g. on-prem)."""
    if price is None:
        return 0.0
    usd = (tokens_in * price.input + tokens_out * price.output) / 1_000_000
    return usd * BATCH_DISCOUNT if batch else usd


class BudgetExhausted(RuntimeError):
    """The next request would take the run over its budget."""


class Budget:
    """A run's spend against `limit_usd` (None = no cap), persisted in the run folder's ledger."""

    _shared: dict[Path, Budget] = {}
    _shared_lock = threading.Lock()

    def __init__(self, ledger: Path, limit_usd: float | None):
        self.limit_usd = limit_usd
        self._db = connect(ledger)
        self._db.execute("CREATE TABLE IF NOT EXISTS spend "
                         "(time REAL NOT NULL, source TEXT NOT NULL, usd REAL NOT NULL)")
        self.spent_usd = self._db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend").fetchone()[0]
        self.reserved_usd = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, ledger: Path, limit_usd: float | None) -> Budget:
        """The one Budget of this process for `ledger` (its limit updated to `limit_usd`)."""
        key = Path(ledger).resolve()
        with cls._shared_lock:
            budget = cls._shared.get(key)
            if budget is None:
                budget = cls._shared[key] = cls(key, limit_usd)
            budget.limit_usd = limit_usd
            return budget

    def reserve(self, usd: float) -> float:
        """Hold `usd` for a request about to be sent; raise BudgetExhausted if the cap would be passed."""
        with self._lock:
            if self.limit_usd is not None and self.spent_usd + self.reserved_usd + usd > self.limit_usd:
                raise BudgetExhausted(
                    f"budget of ${self.limit_usd:.4f} reached: ${self.spent_usd:.4f} spent, "
                    f"${self.reserved_usd:.4f} in flight, next request needs up to ${usd:.4f}")
            self.reserved_usd += usd
            return usd

    def settle(self, reserved: float, actual_usd: float, source: str) -> None:
        """Replace a reservation by the real cost (0 releases it), persisting the spend."""
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - reserved)
            self.spent_usd += actual_usd
            if actual_usd:
                self._db.execute("INSERT INTO spend VALUES (?, ?, ?)", (time.time(), source, actual_usd))

    @property
    def remaining_usd(self) -> float | None:
        with self._lock:
            return None if self.limit_usd is None else self.limit_usd - self.spent_usd - self.reserved_usd
