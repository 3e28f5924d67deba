"""The LLM teacher: any OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, TGI, LoRAX) labels records.

One `LlmTeacher` per (question, llm source). `vote(ids, texts)` returns the contract's vote table
(`id`, `vote` int8 -1/0/1, `conf` float32 or null). P(yes) comes from the answer token's top
log-probabilities when the endpoint returns them (conf = max(p, 1 - p)); otherwise the parsed Yes/No is a
hard vote with a null conf. An unparseable answer or a request that still fails after its retries is an
abstention with a failure record in `<run>/llm/failures/<question>.<source>.jsonl`.

Production concerns handled here: residency check before any connection, PII masking, audit log,
bounded concurrency (threads), request/token rate limits, retries with jittered exponential backoff that
honour Retry-After (the openai client's own retries are off), a persistent SQLite response cache written
as answers arrive, token/cost accounting with a hard budget cap (reserve, then settle), and the Batch API
(`batch.py`). Both modes report to one `Ledger`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import openai
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from assay.labeling.votes import vote_table
from assay.schemas.questions import LlmSource, QuestionSpec

from .audit import AuditLog, sha256
from .batch import BatchJob, run_batches
from .cache import ResponseCache
from .cost import Budget, cost_usd, estimate_prompt_tokens
from .errors import FATAL, RETRYABLE, LlmTeacherError, describe
from .ledger import Failure, Ledger, PreparedRecord
from .masking import Masker
from .prompt import decide, read_completion, render_prompt, truncate
from .ratelimit import RateLimiter, backoff_s, retry_after_s
from .residency import Guard, ResidencyError, refusal
from .settings import Settings, load_settings
from .transport import check_key_name, open_client, read_api_key

UNREACHABLE_AFTER = 3  # records in a row that exhausted their retries with no success between: stop the run


class LlmTeacher:
    """Labels records by asking an OpenAI-compatible endpoint the question of `spec`."""

    def __init__(self, spec: QuestionSpec, source: LlmSource, run_dir: Path, settings: Settings | None = None,
                 progress: bool = True):
        check_key_name(source)
        self.settings = settings if settings is not None else load_settings()
        self.guard = Guard(self.settings)
        self.guard.vet(source.base_url)  # before anything could open a connection
        self.spec, self.source, self.name = spec, source, source.name
        self.progress = progress
        folder = Path(run_dir) / "llm"
        settings = self.settings
        audit = AuditLog(settings.audit_log or folder / "audit.jsonl", endpoint=source.base_url, model=source.model,
                         question_id=spec.id, source=source.name, mode=source.mode) if settings.audit else None
        self.price = settings.price(source.model)
        self.ledger = Ledger(cache=ResponseCache((settings.cache_dir or folder) / "cache.sqlite"),
                             budget=Budget.for_run(folder / "ledger.sqlite", settings.budget_usd),
                             failures=folder / "failures" / f"{spec.id}.{self.name}.jsonl", audit=audit,
                             price=self.price, spec_id=spec.id, source=self.name)
        self.masker = Masker(settings.mask_patterns) if settings.mask_pii else None
        self.concurrency = source.concurrency or settings.concurrency
        self.timeout_s = source.request_timeout_s or settings.request_timeout_s
        self.max_retries = settings.max_retries if source.max_retries is None else source.max_retries
        self.limiter = RateLimiter(source.requests_per_minute or settings.requests_per_minute,
                                   source.tokens_per_minute or settings.tokens_per_minute)
        self.batch_state = folder / "batches" / f"{spec.id}.{self.name}.json"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._use_logprobs = source.logprobs
        self._client: openai.OpenAI | None = None
        self._api_key: str | None = None
        template = render_prompt(spec, "\x00TEXT\x00", source.prompt)
        self._key_prefix = json.dumps([source.base_url.rstrip("/"), source.model, sha256(template), source.logprobs,
                                       source.top_logprobs, source.temperature, source.max_answer_tokens])

    @property
    def stats(self):
        """The ledger's counters."""
        return self.ledger.stats

    @property
    def cache(self) -> ResponseCache:
        return self.ledger.cache

    @property
    def budget(self) -> Budget:
        return self.ledger.budget

    # ---- public -----------------------------------------------------------------------------------

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """Label each text; returns `id`, `vote` (-1/0/1), `conf` (P of the vote when logprobs came back)."""
        if len(ids) != len(texts):
            raise ValueError(f"vote() got {len(ids)} ids but {len(texts)} texts")
        self._fatal, self.ledger.failing_in_row = None, 0
        requests = [self.prepare(str(record_id), text) for record_id, text in zip(ids, texts)]
        results: dict[str, dict | Failure] = dict(self.cache.get_many(r.key for r in requests))
        self.stats.cached += sum(r.key in results for r in requests)
        todo = list({r.key: r for r in requests if r.key not in results}.values())
        if todo:
            results.update(self._run_batch(todo) if self.source.mode == "batch" else self._run_online(todo))
        votes, confs = [], []
        for request in requests:
            vote, conf, failure = self._outcome(results.get(request.key))
            if failure is not None:
                self.ledger.record_failure(request, failure)
            votes.append(vote)
            confs.append(np.nan if conf is None else conf)
        if todo and self.progress:
            self.print_summary()
        if self._fatal:
            raise LlmTeacherError(self._fatal)
        return vote_table([r.record_id for r in requests], np.array(votes), np.array(confs, dtype=np.float32))

    @staticmethod
    def _outcome(result: dict | Failure | None) -> tuple[int, float | None, Failure | None]:
        """(vote, conf, failure or None) of a cache record, a failure, or nothing (the run stopped first)."""
        if result is None:
            return -1, None, Failure("not sent: the run was stopped", 0)
        if isinstance(result, Failure):
            return -1, None, result
        vote, conf = decide(result)
        if vote == -1:
            return -1, None, Failure(f"unparseable answer: {result['content'][:40]!r} (expected Yes or No)", 1)
        return vote, conf, None

    def summary(self) -> dict:
        """Requests, cache hits, failures, tokens, cost and whether the budget stopped the run."""
        s = self.stats
        return {"source": self.name, "question_id": self.spec.id, "endpoint": self.source.base_url,
                "model": self.source.model, "mode": self.source.mode, "requests": s.requests,
                "answered": s.answered, "cached": s.cached, "failed": s.failed, "retries": s.retries,
                "tokens_in": s.tokens_in, "tokens_out": s.tokens_out, "cost_usd": round(s.cost_usd, 6),
                "price_known": self.price is not None, "budget_usd": self.budget.limit_usd,
                "budget_exhausted": s.budget_exhausted, "with_logprobs": s.with_logprobs,
                "truncated": s.truncated, "masked": dict(s.masked), "rate_limited_s": round(s.rate_limited_s, 3)}

    def print_summary(self, console: Console | None = None) -> None:
        """A readable table of `summary()`."""
        table = Table(title=f"LLM teacher {self.spec.id}/{self.name} ({self.source.model}, {self.source.mode})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in self.summary().items():
            if key not in ("source", "question_id", "model", "mode"):
                table.add_row(key, f"${value:.4f}" if key == "cost_usd" else str(value))
        (console or Console()).print(table)

    def close(self) -> None:
        """Close the HTTP client and the cache."""
        if self._client is not None:
            self._client.close()
        self.cache.close()

    # ---- preparing -----------------------------------------------------------------------------

    def prepare(self, record_id: str, text: str) -> PreparedRecord:
        """Mask, truncate, prompt and key one record."""
        masked: dict[str, int] = {}
        if self.masker is not None:
            result = self.masker.mask(text)
            text, masked = result.text, result.counts
            self.stats.masked.update(masked)
        text, cut = truncate(text, self.source.max_text_chars)
        self.stats.truncated += cut
        prompt = render_prompt(self.spec, text, self.source.prompt)
        key = hashlib.sha256(f"{self._key_prefix}|{sha256(text)}".encode()).hexdigest()
        return PreparedRecord(record_id, key, prompt, text, masked, estimate_prompt_tokens(prompt))

    def body(self, request: PreparedRecord) -> dict:
        """The chat-completions request body for one record."""
        body = {"model": self.source.model, "messages": [{"role": "user", "content": request.prompt}],
                "max_tokens": self.source.max_answer_tokens, "temperature": self.source.temperature}
        if self._use_logprobs:
            body.update(logprobs=True, top_logprobs=self.source.top_logprobs)
        return body

    def client(self) -> openai.OpenAI:
        """The openai client (created on first use): no client retries, no environment proxies, no redirects,
        every connection dialled to an address the residency guard checked (see `transport.py`)."""
        if self._client is None:
            self._api_key = read_api_key(self.source)
            self._client = open_client(self.source.base_url, self._api_key, self.guard, self.concurrency,
                                       self.timeout_s)
        return self._client

    def describe(self, exc: BaseException) -> str:
        """An endpoint error in one line, the API key blanked."""
        return describe(exc, self._api_key)

    # ---- online mode ---------------------------------------------------------------------------

    def _run_online(self, todo: list[PreparedRecord]) -> dict[str, dict | Failure]:
        self.client()  # a missing key fails here, once, before any thread starts
        results: dict[str, dict | Failure] = {}
        bar = tqdm(total=len(todo), desc=f"{self.spec.id}/{self.name}", unit="req", disable=not self.progress)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"llm-{self.name}")
        try:
            futures = {pool.submit(self._ask, request): request for request in todo}
            for future in as_completed(futures):
                results[futures[future].key] = future.result()
                bar.update()
        finally:
            self._stop.set()  # on an exception or Ctrl-C: queued requests return at once
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            self._stop.clear()
        return results

    def _ask(self, request: PreparedRecord) -> dict | Failure:
        """Send one request with retries; every attempt is audited before it is sent. Never raises."""
        attempts, allowed, last_error = 0, self.max_retries + 1, ""
        while attempts < allowed:
            if self._stop.is_set():
                why = self._fatal or "the run was stopped"
                if not attempts:
                    return Failure(f"not sent: {why}", 0)
                return self.ledger.failed(request, f"stopped after {attempts} attempt(s): {why}", attempts, False)
            reserved = self.ledger.reserve(cost_usd(self.price, request.est_tokens_in, self.source.max_answer_tokens))
            if isinstance(reserved, Failure):
                return self.ledger.failed(request, reserved.reason, attempts, False) if attempts else reserved
            waited = self.limiter.acquire(request.est_tokens_in + self.source.max_answer_tokens)
            attempts += 1
            self.ledger.sending(request, attempts, waited)
            body = self.body(request)
            try:
                completion = self.client().chat.completions.create(**body)
            except Exception as exc:  # noqa: BLE001 - sorted by _failed_attempt
                self.ledger.release(reserved)
                verdict = self._failed_attempt(request, exc, body, attempts)
                if isinstance(verdict, Failure):
                    return verdict
                allowed += verdict == "again"  # the logprobs fallback: one more attempt, still counted
                last_error = self.describe(exc)
                continue
            return self.ledger.answered(request, read_completion(completion.model_dump()), reserved, attempts,
                                        batch=False)
        return self._give_up(request, f"failed after {attempts} attempts: {last_error}", attempts)

    def _failed_attempt(self, request: PreparedRecord, exc: Exception, body: dict, attempts: int) -> str | Failure:
        """After a failed send: a Failure to return, "again" (logprobs fallback) or "retry" (after a backoff)."""
        refused = exc if isinstance(exc, ResidencyError) else refusal(exc)
        if refused is not None:  # the guard refused the connection: nothing was sent
            self._halt(str(refused))
            return self.ledger.failed(request, str(refused), attempts, False, outcome="refused")
        if isinstance(exc, openai.BadRequestError):
            if body.get("logprobs") and "logprobs" in str(exc).lower():
                self._use_logprobs = False  # the endpoint cannot return them: hard votes from now on
                return "again"
            return self.ledger.failed(request, f"rejected: {self.describe(exc)}", attempts, False)
        if isinstance(exc, FATAL):
            self._halt(f"{self.source.base_url} refused the request ({self.describe(exc)}); check the key in "
                       f"{self.source.api_key_file or '$' + self.source.api_key_env} and the model name "
                       f"{self.source.model!r}")
            return self.ledger.failed(request, self.describe(exc), attempts, False, outcome="refused")
        if isinstance(exc, RETRYABLE):
            if attempts <= self.max_retries:
                time.sleep(backoff_s(attempts, self.settings.backoff_base_s, self.settings.backoff_max_s,
                                     retry_after_s(getattr(exc, "response", None))))
            return "retry"
        if isinstance(exc, openai.APIStatusError):
            return self.ledger.failed(request, f"rejected: {self.describe(exc)}", attempts, False)
        self._halt(f"unexpected error from {self.source.base_url}: {self.describe(exc)}")
        return self.ledger.failed(request, self.describe(exc), attempts, False)

    def _give_up(self, request: PreparedRecord, reason: str, attempts: int) -> Failure:
        failure = self.ledger.failed(request, reason, attempts, endpoint_fault=True)
        failing = self.ledger.failing_in_row
        if failing >= UNREACHABLE_AFTER:
            self._halt(f"{self.source.base_url} failed {failing} records in a row after all retries "
                       f"(last: {reason}); is the endpoint up? Answers so far are cached: re-run to resume")
        return failure

    def _halt(self, message: str) -> None:
        with self._lock:
            self._fatal = self._fatal or message
        self._stop.set()

    # ---- batch mode ----------------------------------------------------------------------------

    def _run_batch(self, todo: list[PreparedRecord]) -> dict[str, dict | Failure]:
        job = BatchJob(client=self.client(), body=self.body, ledger=self.ledger, settings=self.settings,
                       state_path=self.batch_state, label=f"{self.spec.id}.{self.name}", max_retries=self.max_retries,
                       max_answer_tokens=self.source.max_answer_tokens, progress=self.progress,
                       describe=self.describe)
        return run_batches(job, todo)
