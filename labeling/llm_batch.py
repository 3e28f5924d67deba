"""The OpenAI Batch API mode of the LLM teacher (`mode: batch`): half the price, answers within 24 h.

Requests are written as JSONL, uploaded through the files API, submitted as batches of at most
`batch_max_requests`, polled until they end, and their output parsed into the same cache records as
online answers. Submitted batch ids are saved in `<run>/llm/batches/<question>.<source>.json` before
waiting, so a run killed while waiting re-attaches to its batches instead of paying for them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tqdm.auto import tqdm

from .llm_cost import BudgetExhausted, cost_usd
from .ratelimit import backoff_s, retry_after_s

if TYPE_CHECKING:
    from .llm import Failure, LlmTeacher, PreparedRecord

T = TypeVar("T")
DONE = ("completed", "failed", "expired", "cancelled")
CHAT_PATH = "/v1/chat/completions"


def _load_state(teacher: "LlmTeacher") -> list[dict]:
    path = teacher.batch_state
    return json.loads(path.read_text()) if path.exists() else []


def _save_state(teacher: "LlmTeacher", state: list[dict]) -> None:
    path = teacher.batch_state
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=1))
    temporary.replace(path)


def _call(teacher: "LlmTeacher", function: Callable[..., T], *args, **kwargs) -> T:
    """A files/batches API call, retried like chat requests (a flaky poll must not lose a 24 h batch)."""
    from .llm import RETRYABLE

    for attempt in range(1, teacher.max_retries + 2):
        try:
            return function(*args, **kwargs)
        except RETRYABLE as exc:
            if attempt > teacher.max_retries:
                raise
            time.sleep(backoff_s(attempt, teacher.settings.backoff_base_s, teacher.settings.backoff_max_s,
                                 retry_after_s(getattr(exc, "response", None))))
    raise AssertionError("unreachable")


def _submit(teacher: "LlmTeacher", requests: list["PreparedRecord"]) -> str:
    lines = "".join(json.dumps({"custom_id": r.key, "method": "POST", "url": CHAT_PATH, "body": teacher.body(r)}) + "\n"
                    for r in requests)
    client = teacher.client()
    upload = _call(teacher, client.files.create, file=(f"{teacher.spec.id}.{teacher.name}.jsonl", lines.encode()),
                   purpose="batch")
    batch = _call(teacher, client.batches.create, input_file_id=upload.id, endpoint=CHAT_PATH,
                  completion_window="24h", metadata={"assay_question": teacher.spec.id, "assay_source": teacher.name})
    return batch.id


def _wait(teacher: "LlmTeacher", batch_id: str):
    client = teacher.client()
    bar = tqdm(desc=f"{teacher.spec.id}/{teacher.name} batch {batch_id[-8:]}", unit="req",
               disable=not teacher.progress)
    try:
        while True:
            batch = _call(teacher, client.batches.retrieve, batch_id)
            counts = batch.request_counts
            if counts is not None:
                bar.total = counts.total or None
                bar.n = counts.completed + counts.failed
                bar.set_postfix_str(batch.status)
            if batch.status in DONE:
                return batch
            time.sleep(teacher.settings.batch_poll_s)
    finally:
        bar.close()


def _output_lines(teacher: "LlmTeacher", file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    text = _call(teacher, teacher.client().files.content, file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _collect(teacher: "LlmTeacher", entry: dict, by_key: dict[str, "PreparedRecord"],
             reserved: dict[str, float]) -> dict[str, "dict | Failure"]:
    """Wait for one batch and turn its output and error files into answers and failures."""
    from .llm import Failure, read_completion

    batch = _wait(teacher, entry["batch_id"])
    results: dict[str, dict | Failure] = {}
    for line in _output_lines(teacher, batch.output_file_id) + _output_lines(teacher, batch.error_file_id):
        key, response = line.get("custom_id"), line.get("response") or {}
        body = response.get("body")
        if response.get("status_code") == 200 and isinstance(body, dict) and body.get("choices"):
            answer = read_completion(body)
            if key in by_key:
                results[key] = teacher._answered(by_key[key], answer, reserved.pop(key, 0.0), 1, batch=True)
            else:  # submitted by an earlier run for records not asked for now: keep the paid answer
                teacher.cache.put(key, {**answer, "cost_usd": cost_usd(teacher.price, answer["tokens_in"],
                                                                       answer["tokens_out"], batch=True)})
        elif key in by_key:
            error = line.get("error") or (body.get("error") if isinstance(body, dict) else body)
            results[key] = teacher._give_up(
                by_key[key], f"batch {batch.id}: HTTP {response.get('status_code')}: {json.dumps(error)[:200]}", 1,
                endpoint_fault=False)
    for key in entry["keys"]:
        if key not in results and key in by_key:
            results[key] = Failure(f"batch {batch.id} ended '{batch.status}' without an answer for this record", 1)
        teacher.budget.settle(reserved.pop(key, 0.0), 0.0, teacher.name)
    teacher.stats.requests += len(entry["keys"])
    return results


def run_batches(teacher: "LlmTeacher", todo: list["PreparedRecord"]) -> dict[str, "dict | Failure"]:
    """Label `todo` through the Batch API, re-attaching first to batches a killed run left waiting."""
    from .llm import Failure

    by_key = {request.key: request for request in todo}
    entries = _load_state(teacher)
    pending = [entry for entry in entries if not entry["collected"]]
    submitted = {key for entry in pending for key in entry["keys"]}

    results: dict[str, dict | Failure] = {}
    reserved: dict[str, float] = {}
    affordable: list = []
    for request in todo:
        if request.key in submitted:
            continue
        estimate = cost_usd(teacher.price, request.est_tokens_in, teacher.source.max_answer_tokens, batch=True)
        try:
            reserved[request.key] = teacher.budget.reserve(estimate)
        except BudgetExhausted as exc:
            teacher.stats.budget_exhausted = True
            results[request.key] = Failure(f"budget_exhausted: {exc}", 0)
            continue
        affordable.append(request)

    size = teacher.settings.batch_max_requests
    for start in range(0, len(affordable), size):
        chunk = affordable[start:start + size]
        entry = {"batch_id": _submit(teacher, chunk), "keys": [r.key for r in chunk], "collected": False}
        entries.append(entry)
        pending.append(entry)
        _save_state(teacher, entries)  # before waiting: a killed run re-attaches instead of paying twice

    for entry in pending:
        results.update(_collect(teacher, entry, by_key, reserved))
        entry["collected"] = True
        _save_state(teacher, entries)
    return results
