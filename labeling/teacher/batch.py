"""The OpenAI Batch API mode of the LLM teacher (`mode: batch`): half the price, answers within 24 h.

Requests are written as JSONL, uploaded through the files API, submitted as batches of at most
`batch_max_requests`, polled until they end, and their output parsed into the same cache records as
online answers; every outcome goes to the teacher's `Ledger`.

Never paying twice: before anything is uploaded, the INTENT (a client-side id, the request file's hash and
its keys) is saved in `<run>/llm/batches/<question>.<source>.json`; the file is uploaded under the name
`assay-<intent>.jsonl` and the batch created with `metadata.assay_intent`, and each step's id is saved as
it returns. A run killed at any point resumes by finding what the provider already has (the batch by its
metadata or input file, else the file by its name) and creates only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import openai
from tqdm.auto import tqdm

from assay.schemas.files import write_text_atomic

from .cost import cost_usd
from .errors import RETRYABLE
from .ledger import Failure, Ledger, PreparedRecord
from .prompt import read_completion
from .ratelimit import backoff_s, retry_after_s
from .settings import Settings

T = TypeVar("T")
DONE = ("completed", "failed", "expired", "cancelled")
CHAT_PATH = "/v1/chat/completions"
LOOK_BACK_S = 3600  # when searching the provider's batch list for an intent: stop this long before its time


@dataclass
class BatchJob:
    """What the batch mode needs from its teacher."""

    client: openai.OpenAI
    body: Callable[[PreparedRecord], dict]
    ledger: Ledger
    settings: Settings
    state_path: Path
    label: str  # <question>.<source>
    max_retries: int
    max_answer_tokens: int
    progress: bool
    describe: Callable[[BaseException], str]

    def call(self, function: Callable[..., T], *args, **kwargs) -> T:
        """A files/batches API call, retried like chat requests (a flaky poll must not lose a 24 h batch)."""
        for attempt in range(1, self.max_retries + 2):
            try:
                return function(*args, **kwargs)
            except RETRYABLE as exc:
                if attempt > self.max_retries:
                    raise
                time.sleep(backoff_s(attempt, self.settings.backoff_base_s, self.settings.backoff_max_s,
                                     retry_after_s(getattr(exc, "response", None))))
        raise AssertionError("unreachable")

    def load(self) -> list[dict]:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else []

    def save(self, entries: list[dict]) -> None:
        write_text_atomic(json.dumps(entries, indent=1), self.state_path)


def request_file(job: BatchJob, requests: list[PreparedRecord]) -> bytes:
    """The Batch API input file (JSONL, one chat request per record, keyed by the cache key)."""
    return "".join(json.dumps({"custom_id": r.key, "method": "POST", "url": CHAT_PATH, "body": job.body(r)}) + "\n"
                   for r in requests).encode()


def _upload(job: BatchJob, entry: dict, entries: list[dict], requests: list[PreparedRecord], content: bytes) -> None:
    """Audit every record, then upload the file and save its id."""
    for request in requests:
        job.ledger.sending(request, 1, batch_intent=entry["intent"], batch_file_sha256=entry["file_sha256"])
    upload = job.call(job.client.files.create, file=(f"assay-{entry['intent']}.jsonl", content), purpose="batch")
    entry["file_id"] = upload.id
    job.save(entries)


def _create(job: BatchJob, entry: dict, entries: list[dict]) -> None:
    batch = job.call(job.client.batches.create, input_file_id=entry["file_id"], endpoint=CHAT_PATH,
                     completion_window="24h", metadata={"assay_intent": entry["intent"], "assay_job": job.label})
    entry["batch_id"] = batch.id
    job.save(entries)


def _submit(job: BatchJob, entries: list[dict], requests: list[PreparedRecord]) -> dict:
    """Save the intent, upload, create: each step saved as it returns."""
    content = request_file(job, requests)
    entry = {"intent": uuid.uuid4().hex, "created": time.time(), "file_sha256": hashlib.sha256(content).hexdigest(),
             "keys": [r.key for r in requests], "file_id": None, "batch_id": None, "collected": False}
    entries.append(entry)
    job.save(entries)  # the intent first: a kill after this point is found again on resume
    _upload(job, entry, entries, requests, content)
    _create(job, entry, entries)
    return entry


def _find_batch(job: BatchJob, entry: dict) -> str | None:
    """The id of a batch the provider holds for this intent (by metadata or input file), newest first."""
    for batch in job.call(job.client.batches.list, limit=100):
        if (batch.metadata or {}).get("assay_intent") == entry["intent"] or (
                entry["file_id"] and batch.input_file_id == entry["file_id"]):
            return batch.id
        if batch.created_at < entry["created"] - LOOK_BACK_S:
            return None
    return None


def _find_file(job: BatchJob, entry: dict) -> str | None:
    name = f"assay-{entry['intent']}.jsonl"
    for file in job.call(job.client.files.list, purpose="batch"):
        if file.filename == name:
            return file.id
    return None


def _recover(job: BatchJob, entry: dict, entries: list[dict], by_key: dict[str, PreparedRecord]) -> bool:
    """Finish an intent a killed run left without a batch id; False when nothing of it reached the provider
    and it cannot be rebuilt (its records are then asked for afresh)."""
    entry["batch_id"] = _find_batch(job, entry)
    if entry["batch_id"] is None:
        entry["file_id"] = entry["file_id"] or _find_file(job, entry)
        if entry["file_id"] is None:
            requests = [by_key[key] for key in entry["keys"] if key in by_key]
            content = request_file(job, requests)
            if len(requests) < len(entry["keys"]) or hashlib.sha256(content).hexdigest() != entry["file_sha256"]:
                entries.remove(entry)
                job.save(entries)
                return False
            _upload(job, entry, entries, requests, content)
        _create(job, entry, entries)
    job.save(entries)
    return True


def _wait(job: BatchJob, batch_id: str):
    bar = tqdm(desc=f"{job.label} batch {batch_id[-8:]}", unit="req", disable=not job.progress)
    try:
        while True:
            batch = job.call(job.client.batches.retrieve, batch_id)
            counts = batch.request_counts
            if counts is not None:
                bar.total = counts.total or None
                bar.n = counts.completed + counts.failed
                bar.set_postfix_str(batch.status)
            if batch.status in DONE:
                return batch
            time.sleep(job.settings.batch_poll_s)
    finally:
        bar.close()


def _output_lines(job: BatchJob, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    text = job.call(job.client.files.content, file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _collect(job: BatchJob, entry: dict, by_key: dict[str, PreparedRecord],
             reserved: dict[str, float]) -> dict[str, dict | Failure]:
    """Wait for one batch and turn its output and error files into answers and failures."""
    batch = _wait(job, entry["batch_id"])
    results: dict[str, dict | Failure] = {}
    for line in _output_lines(job, batch.output_file_id) + _output_lines(job, batch.error_file_id):
        key, response = line.get("custom_id"), line.get("response") or {}
        body = response.get("body")
        if response.get("status_code") == 200 and isinstance(body, dict) and body.get("choices"):
            answer = read_completion(body)
            if key in by_key:
                results[key] = job.ledger.answered(by_key[key], answer, reserved.pop(key, 0.0), 1, batch=True)
            else:  # submitted by an earlier run for records not asked for now: keep the paid answer
                job.ledger.keep_unasked(key, answer, batch=True)
        elif key in by_key:
            error = line.get("error") or (body.get("error") if isinstance(body, dict) else body)
            results[key] = job.ledger.failed(
                by_key[key], f"batch {batch.id}: HTTP {response.get('status_code')}: {json.dumps(error)[:200]}", 1,
                endpoint_fault=False)
    for key in entry["keys"]:
        if key not in results and key in by_key:
            results[key] = job.ledger.failed(
                by_key[key], f"batch {batch.id} ended '{batch.status}' without an answer for this record", 1, False)
        job.ledger.release(reserved.pop(key, 0.0))
    return results


def _reserve(job: BatchJob, todo: list[PreparedRecord], submitted: set[str], results: dict,
             reserved: dict[str, float]) -> list[PreparedRecord]:
    """The records not yet submitted whose estimated cost fits the budget (the others fail here)."""
    affordable = []
    for request in todo:
        if request.key in submitted:
            continue
        held = job.ledger.reserve(cost_usd(job.ledger.price, request.est_tokens_in, job.max_answer_tokens, batch=True))
        if isinstance(held, Failure):
            results[request.key] = held
            continue
        reserved[request.key] = held
        affordable.append(request)
    return affordable


def run_batches(job: BatchJob, todo: list[PreparedRecord]) -> dict[str, dict | Failure]:
    """Label `todo` through the Batch API, first finishing and re-attaching to what a killed run left."""
    by_key = {request.key: request for request in todo}
    entries = job.load()
    pending = [entry for entry in list(entries) if not entry["collected"]
               and (entry.get("batch_id") or _recover(job, entry, entries, by_key))]
    submitted = {key for entry in pending for key in entry["keys"]}
    results: dict[str, dict | Failure] = {}
    reserved: dict[str, float] = {}
    affordable = _reserve(job, todo, submitted, results, reserved)
    size = job.settings.batch_max_requests
    for start in range(0, len(affordable), size):
        pending.append(_submit(job, entries, affordable[start:start + size]))
    for entry in pending:
        results.update(_collect(job, entry, by_key, reserved))
        entry["collected"] = True
        job.save(entries)
    return results
