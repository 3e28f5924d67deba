"""The LLM teacher: any OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, TGI, LoRAX) labels records.

One `LlmTeacher` per (question, llm source). `vote(ids, texts)` returns the contract's vote table
(`id`, `vote` int8 -1/0/1, `conf` float32 or null). P(yes) comes from the answer token's top
log-probabilities when the endpoint returns them (conf = max(p, 1 - p)); otherwise the parsed Yes/No is a
hard vote with a null conf. An unparseable answer or a request that still fails after its retries is an
abstention with a failure record in `<run>/llm/failures/<question>.<source>.jsonl`.

Production concerns handled here: residency check before any connection, PII masking, audit log,
bounded concurrency (threads), request/token rate limits, retries with jittered exponential backoff that
honour Retry-After (the openai client's own retries are off), a persistent SQLite response cache written
as answers arrive, token/cost accounting with a hard budget cap (reserve, then settle), and the Batch API.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import numpy as np
import openai
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from assay.schemas.questions import LlmSource, QuestionSpec
from assay.schemas.settings import Settings, load_settings

from .llm_batch import run_batches
from .llm_cache import ResponseCache
from .llm_cost import Budget, BudgetExhausted, cost_usd, estimate_prompt_tokens
from .privacy import AuditLog, JsonlLog, Masker, ResidencyError, check_endpoint, now_iso, sha256
from .prompt import p_yes_from_top_logprobs, parse_answer, render_prompt, truncate
from .ratelimit import RateLimiter, backoff_s, retry_after_s
from .votes import vote_table

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
             openai.APIConnectionError, openai.APIResponseValidationError, openai.ConflictError,
             json.JSONDecodeError)  # the last: an HTTP 200 whose body is not JSON (a broken proxy)
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
UNREACHABLE_AFTER = 3  # records in a row that exhausted their retries with no success between: stop the run


class LlmTeacherError(RuntimeError):
    """A problem no retry can fix (missing key, rejected key, unknown model, endpoint down); stops the run."""


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
class _Stats:
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


def read_api_key(source: LlmSource) -> str:
    """The API key from `api_key_file` or the `api_key_env` variable; a clear error when neither is set."""
    if source.api_key_file:
        path = Path(source.api_key_file).expanduser()
        if not path.is_file():
            raise LlmTeacherError(f"source {source.name}: api_key_file {path} does not exist "
                                  "(fix: mount the secret there or use api_key_env)")
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise LlmTeacherError(f"source {source.name}: api_key_file {path} is empty")
        return key
    key = os.environ.get(source.api_key_env, "").strip()
    if not key:
        raise LlmTeacherError(f"source {source.name}: environment variable {source.api_key_env} is not set "
                              f"(fix: export {source.api_key_env}=...; for an endpoint without auth any value "
                              "works, e.g. EMPTY; or set api_key_file)")
    return key


def read_completion(completion: dict) -> dict:
    """The cache record of a chat completion (a dict in the OpenAI format): answer text, P(yes), usage."""
    choice = (completion.get("choices") or [{}])[0]
    content = ((choice.get("message") or {}).get("content") or "").strip()
    positions = [(item.get("token", ""),
                  [(top["token"], top["logprob"]) for top in item.get("top_logprobs") or []]
                  or [(item.get("token", ""), item.get("logprob", 0.0))])
                 for item in ((choice.get("logprobs") or {}).get("content") or [])]
    usage = completion.get("usage") or {}
    return {"content": content[:200], "p_yes": p_yes_from_top_logprobs(positions),
            "tokens_in": int(usage.get("prompt_tokens") or 0), "tokens_out": int(usage.get("completion_tokens") or 0)}


def decide(answer: dict) -> tuple[int, float | None]:
    """(vote, conf) of a cache record: from P(yes) when known, else the parsed Yes/No; (-1, None) if neither."""
    p_yes = answer.get("p_yes")
    if p_yes is not None:
        return int(p_yes >= 0.5), max(p_yes, 1.0 - p_yes)
    hard = parse_answer(answer.get("content"))
    return (-1, None) if hard is None else (hard, None)


class LlmTeacher:
    """Labels records by asking an OpenAI-compatible endpoint the question of `spec`."""

    def __init__(self, spec: QuestionSpec, source: LlmSource, run_dir: Path, settings: Settings | None = None,
                 progress: bool = True):
        self.settings = settings if settings is not None else load_settings()
        check_endpoint(source.base_url, self.settings)  # before anything could open a connection
        self.spec, self.source, self.name = spec, source, source.name
        self.progress = progress
        folder = Path(run_dir) / "llm"
        settings = self.settings
        self.cache = ResponseCache((settings.cache_dir or folder) / "cache.sqlite")
        self.budget = Budget.for_run(folder / "ledger.sqlite", settings.budget_usd)
        self.failures = JsonlLog(folder / "failures" / f"{spec.id}.{self.name}.jsonl")
        self.audit = AuditLog(settings.audit_log or folder / "audit.jsonl") if settings.audit else None
        self.masker = Masker(settings.mask_patterns) if settings.mask_pii else None
        self.price = settings.price(source.model)
        self.concurrency = source.concurrency or settings.concurrency
        self.timeout_s = source.request_timeout_s or settings.request_timeout_s
        self.max_retries = settings.max_retries if source.max_retries is None else source.max_retries
        self.limiter = RateLimiter(source.requests_per_minute or settings.requests_per_minute,
                                   source.tokens_per_minute or settings.tokens_per_minute)
        self.batch_state = folder / "batches" / f"{spec.id}.{self.name}.json"
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._failing_in_row = 0
        self._use_logprobs = source.logprobs
        self._client: openai.OpenAI | None = None
        template = render_prompt(spec, "\x00TEXT\x00", source.prompt)
        self._key_prefix = json.dumps([source.base_url.rstrip("/"), source.model, sha256(template), source.logprobs,
                                       source.top_logprobs, source.temperature, source.max_answer_tokens])

    # ---- public -----------------------------------------------------------------------------------

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """Label each text; returns `id`, `vote` (-1/0/1), `conf` (P of the vote when logprobs came back)."""
        if len(ids) != len(texts):
            raise ValueError(f"vote() got {len(ids)} ids but {len(texts)} texts")
        self._fatal, self._failing_in_row = None, 0
        requests = [self.prepare(str(record_id), text) for record_id, text in zip(ids, texts)]
        results: dict[str, dict | Failure] = dict(self.cache.get_many(r.key for r in requests))
        self.stats.cached += sum(r.key in results for r in requests)
        todo = list({r.key: r for r in requests if r.key not in results}.values())
        if todo:
            run = self._run_batch if self.source.mode == "batch" else self._run_online
            results.update(run(todo))
        votes, confs = [], []
        for request in requests:
            vote, conf, failure = self._outcome(results.get(request.key))
            if failure is not None:
                self.failures.append({"time": now_iso(), "id": request.record_id, "question_id": self.spec.id,
                                      "source": self.name, "reason": failure.reason, "attempts": failure.attempts})
                self.stats.failed += 1
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
        if self._client is not None:
            self._client.close()
        self.cache.close()

    # ---- preparing -----------------------------------------------------------------------------

    def prepare(self, record_id: str, text: str) -> PreparedRecord:
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
        """The openai client (created on first use): no client retries, no env proxies on-prem, no redirects,
        and a request hook that re-checks residency for every request it sends."""
        if self._client is None:
            def guard(request) -> None:
                check_endpoint(str(request.url), self.settings)

            http = openai.DefaultHttpxClient(
                trust_env=self.settings.residency != "on-prem", follow_redirects=False,
                event_hooks={"request": [guard]},
                limits=httpx2.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
            self._client = openai.OpenAI(base_url=self.source.base_url, api_key=read_api_key(self.source),
                                         max_retries=0, timeout=self.timeout_s, http_client=http)
        return self._client

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
        """Send one request with retries; cache and audit the answer. Never raises."""
        attempts, last_error = 0, ""
        while attempts <= self.max_retries:
            if self._stop.is_set():
                return Failure(f"not sent: {self._fatal or 'the run was stopped'}", attempts)
            estimate = cost_usd(self.price, request.est_tokens_in, self.source.max_answer_tokens)
            try:
                reserved = self.budget.reserve(estimate)
            except BudgetExhausted as exc:
                self.stats.budget_exhausted = True
                return Failure(f"budget_exhausted: {exc}", attempts)
            waited = self.limiter.acquire(request.est_tokens_in + self.source.max_answer_tokens)
            attempts += 1
            with self._lock:
                self.stats.requests += 1
                self.stats.retries += attempts > 1
                self.stats.rate_limited_s += waited
            body = self.body(request)
            try:
                completion = self.client().chat.completions.create(**body)
            except ResidencyError as exc:  # the per-request hook refused it: nothing was sent
                self.budget.settle(reserved, 0.0, self.name)
                self._halt(str(exc))
                return Failure(str(exc), attempts)
            except RETRYABLE as exc:
                self.budget.settle(reserved, 0.0, self.name)
                last_error = _describe(exc)
                if attempts <= self.max_retries:
                    time.sleep(backoff_s(attempts, self.settings.backoff_base_s, self.settings.backoff_max_s,
                                         retry_after_s(getattr(exc, "response", None))))
                continue
            except openai.BadRequestError as exc:
                self.budget.settle(reserved, 0.0, self.name)
                if body.get("logprobs") and "logprobs" in str(exc).lower():
                    self._use_logprobs = False  # the endpoint cannot return them: hard votes from now on
                    attempts -= 1
                    continue
                return self._give_up(request, f"rejected: {_describe(exc)}", attempts, endpoint_fault=False)
            except FATAL as exc:
                self.budget.settle(reserved, 0.0, self.name)
                self._audit(request, 0, 0, attempts, "refused")
                self._halt(f"{self.source.base_url} refused the request ({_describe(exc)}); check the key in "
                           f"{self.source.api_key_file or '$' + self.source.api_key_env} and the model name "
                           f"{self.source.model!r}")
                return Failure(_describe(exc), attempts)
            except openai.APIStatusError as exc:
                self.budget.settle(reserved, 0.0, self.name)
                return self._give_up(request, f"rejected: {_describe(exc)}", attempts, endpoint_fault=False)
            answer = read_completion(completion.model_dump())
            return self._answered(request, answer, reserved, attempts, batch=False)
        return self._give_up(request, f"failed after {attempts} attempts: {last_error}", attempts,
                             endpoint_fault=True)

    def _answered(self, request: PreparedRecord, answer: dict, reserved: float, attempts: int, batch: bool) -> dict:
        """Account, cache and audit one answer."""
        answer["cost_usd"] = cost_usd(self.price, answer["tokens_in"], answer["tokens_out"], batch=batch)
        self.budget.settle(reserved, answer["cost_usd"], self.name)
        self.cache.put(request.key, answer)
        with self._lock:
            self._failing_in_row = 0
            self.stats.answered += 1
            self.stats.tokens_in += answer["tokens_in"]
            self.stats.tokens_out += answer["tokens_out"]
            self.stats.cost_usd += answer["cost_usd"]
            self.stats.with_logprobs += answer["p_yes"] is not None
        self._audit(request, answer["tokens_in"], answer["tokens_out"], attempts, "answered")
        return answer

    def _give_up(self, request: PreparedRecord, reason: str, attempts: int, endpoint_fault: bool) -> Failure:
        self._audit(request, 0, 0, attempts, "failed")
        if endpoint_fault:
            with self._lock:
                self._failing_in_row += 1
                failing = self._failing_in_row
            if failing >= UNREACHABLE_AFTER:
                self._halt(f"{self.source.base_url} failed {failing} records in a row after all retries "
                           f"(last: {reason}); is the endpoint up? Answers so far are cached: re-run to resume")
        return Failure(reason, attempts)

    def _halt(self, message: str) -> None:
        with self._lock:
            self._fatal = self._fatal or message
        self._stop.set()

    def _audit(self, request: PreparedRecord, tokens_in: int, tokens_out: int, attempts: int, outcome: str) -> None:
        if self.audit is not None:
            self.audit.record(endpoint=self.source.base_url, model=self.source.model, question_id=self.spec.id,
                              source=self.name, record_id=request.record_id, sent_text=request.sent_text,
                              tokens_in=tokens_in, tokens_out=tokens_out, masked=request.masked,
                              attempts=attempts, outcome=outcome, mode=self.source.mode)

    # ---- batch mode ----------------------------------------------------------------------------

    def _run_batch(self, todo: list[PreparedRecord]) -> dict[str, dict | Failure]:
        return run_batches(self, todo)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"

