"""The one ledger both modes of the teacher (online and batch) report to: what was sent, answered, failed
and spent, kept in the response cache, the budget, the audit log, the failure records and the counters."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .audit import AuditLog, JsonlLog, now_iso
from .cache import ResponseCache
from .cost import Budget, BudgetExhausted, cost_usd
from .settings import Price


@dataclass(frozen=True)
class Failure:
    """A record the teacher could not label."""

    reason: str
    attempts: int


@dataclass
class PreparedRecord:
    """One record prepared for sending: masked, truncated, prompted and keyed."""

    record_id: str
    key: str
    prompt: str
    sent_text: str
    masked: dict[str, int]
    est_tokens_in: int


@dataclass
class Stats:
    """The counters of one teacher, shown by `summary()`."""

    requests: int = 0
    answered: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    budget_exhausted: bool = False
    truncated: int = 0
    with_logprobs: int = 0
    rate_limited_s: float = 0.0
    masked: Counter = field(default_factory=Counter)


class Ledger:
    """Accounts every request of one teacher; thread-safe. `failing_in_row` counts endpoint faults since the
    last answer (the online mode stops a run when the endpoint looks down)."""

    def __init__(self, *, cache: ResponseCache, budget: Budget, failures: Path, audit: AuditLog | None,
                 price: Price | None, spec_id: str, source: str):
        self.cache, self.budget, self.audit, self.price = cache, budget, audit, price
        self.failures = JsonlLog(failures)
        self.spec_id, self.source = spec_id, source
        self.stats = Stats()
        self.failing_in_row = 0
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float) -> float | Failure:
        """Hold the budget for one request: the amount held, or a Failure when the budget is spent."""
        try:
            return self.budget.reserve(estimate_usd)
        except BudgetExhausted as exc:
            self.stats.budget_exhausted = True
            return Failure(f"budget_exhausted: {exc}", 0)

    def release(self, reserved: float) -> None:
        """Give back a reservation whose request cost nothing (failed, refused, never answered)."""
        self.budget.settle(reserved, 0.0, self.source)

    def sending(self, request: PreparedRecord, attempt: int, waited_s: float = 0.0, **audit_fields) -> None:
        """Count and audit attempt number `attempt` of `request`; call BEFORE the request is sent."""
        with self._lock:
            self.stats.requests += 1
            self.stats.retries += attempt > 1
            self.stats.rate_limited_s += waited_s
        if self.audit is not None:
            self.audit.sending(request.record_id, request.sent_text, request.masked, attempt, **audit_fields)

    def answered(self, request: PreparedRecord, answer: dict, reserved: float, attempts: int, batch: bool) -> dict:
        """Price, settle, cache and audit one answer; returns it with its `cost_usd`."""
        answer["cost_usd"] = cost_usd(self.price, answer["tokens_in"], answer["tokens_out"], batch=batch)
        self.budget.settle(reserved, answer["cost_usd"], self.source)
        self.cache.put(request.key, answer)
        with self._lock:
            self.failing_in_row = 0
            self.stats.answered += 1
            self.stats.tokens_in += answer["tokens_in"]
            self.stats.tokens_out += answer["tokens_out"]
            self.stats.cost_usd += answer["cost_usd"]
            self.stats.with_logprobs += answer["p_yes"] is not None
        self._outcome(request, "answered", attempts, answer["tokens_in"], answer["tokens_out"])
        return answer

    def keep_unasked(self, key: str, answer: dict, batch: bool) -> None:
        """Cache a paid answer for a record not asked for in this run (a batch an earlier run submitted)."""
        self.cache.put(key, {**answer, "cost_usd": cost_usd(self.price, answer["tokens_in"], answer["tokens_out"],
                                                           batch=batch)})

    def failed(self, request: PreparedRecord, reason: str, attempts: int, endpoint_fault: bool,
               outcome: str = "failed") -> Failure:
        """Audit a record given up on; `endpoint_fault` (retries exhausted) counts towards `failing_in_row`."""
        if endpoint_fault:
            with self._lock:
                self.failing_in_row += 1
        if attempts:
            self._outcome(request, outcome, attempts)
        return Failure(reason, attempts)

    def record_failure(self, request: PreparedRecord, failure: Failure) -> None:
        """Write the failure record of one record in the returned vote table."""
        self.failures.append({"time": now_iso(), "id": request.record_id, "question_id": self.spec_id,
                              "source": self.source, "reason": failure.reason, "attempts": failure.attempts})
        self.stats.failed += 1

    def _outcome(self, request: PreparedRecord, outcome: str, attempts: int, tokens_in: int = 0,
                 tokens_out: int = 0) -> None:
        if self.audit is not None:
            self.audit.outcome(request.record_id, request.sent_text, outcome, attempts, tokens_in, tokens_out)
