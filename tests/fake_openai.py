"""FAKE OpenAI-compatible HTTP server for tests and benchmarks: never a real model, never the real API.

`FakeOpenAI` speaks the parts of the protocol the teachers use (`POST /v1/chat/completions` with
`logprobs`/`top_logprobs`, `POST /v1/files`, `GET /v1/files/{id}/content`, `POST /v1/batches`,
`GET /v1/batches/{id}`), answers from a function of the record text (e.g. the recorded GPT-4 answers of
`examples/data/jigsaw/teacher_gpt4.parquet` replayed by text), injects faults on request (429 with
Retry-After, 5xx, timeouts, slow and malformed answers) and COUNTS everything it receives. It keeps its own
`request_log` (one entry per chat request or uploaded batch file, with the SHA-256 of every record text it
carried), lists files and batches (`GET /v1/files`, `GET /v1/batches`, newest first, with the batch
`metadata`), and can `hold` a request at a point (before an upload, before or after a batch creation) so a
test can kill the client there. `stub_dns` replaces the system resolver for a test (never real DNS).

    with FakeOpenAI(answer=lambda text: 0.9, latency_s=0.05) as fake:
        ...  # point an LlmSource at fake.base_url
        assert fake.max_in_flight <= 8

Run standalone for benchmarks: `python tests/fake_openai.py --latency 0.05 --port 8765`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import ipaddress
import json
import math
import re
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JIGSAW = ROOT / "examples" / "data" / "jigsaw"
TEXT_BLOCK = re.compile(r"<text>\n(.*)\n</text>", re.DOTALL)
TOXIC_WORDS = ("idiot", "stupid", "fuck", "hate", "moron", "shit", "kill")

# answer(text) -> P(yes) as a float, or the raw answer content as a str (e.g. "Maybe" for a malformed one)
Answer = Callable[[str], "float | str"]
# fault(text, attempt) -> None or one of: "429", "429:<retry-after s>", "500", "503", "401", "400-logprobs",
# "timeout", "slow:<s>", "malformed" (HTTP 200 with a non-JSON body); attempt counts from 1 per text
Fault = Callable[[str, int], "str | None"]


def stub_dns(monkeypatch, names: dict[str, list[str] | Callable[[], list[str]]]) -> list[str]:
    """Replace the system resolver (`socket.getaddrinfo`) for the test: `names` maps a host to its addresses
    (or to a function returning them, for a resolver that changes its answers); IP literals resolve to
    themselves; any other name fails as unknown. Nothing is ever looked up for real. Returns the log of
    the names (not IP literals) asked for."""
    asked: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else str(host)
        try:
            answer = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            try:  # like the C library: 134744072, 0x08080808, 010.8.8.8 and 8.8.2056 are IPv4 addresses
                answer = [socket.inet_ntoa(socket.inet_aton(host))]
            except OSError:
                answer = None
        if answer is None:
            asked.append(host)
            answer = names.get(host.lower().rstrip("."))
            if answer is None:
                raise socket.gaierror(socket.EAI_NONAME, f"stub resolver: unknown name {host!r}") from None
        addresses = answer() if callable(answer) else answer
        port = int(port or 0)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def record_text(prompt: str) -> str:
    """The record's text inside a prompt built from the default template (the whole prompt otherwise)."""
    match = TEXT_BLOCK.search(prompt)
    return match[1] if match else prompt


def keyword_answer(text: str) -> float:
    """A crude stand-in teacher: P(yes) 0.9 when a toxic keyword appears, else 0.1."""
    return 0.9 if any(word in text.lower() for word in TOXIC_WORDS) else 0.1


def gpt4_replay(yes_p: float = 0.95) -> Answer:
    """Replay the recorded GPT-4 answers of the bundled Jigsaw data by text (keyword answer for others)."""
    import pyarrow.parquet as pq

    teacher = pq.read_table(JIGSAW / "teacher_gpt4.parquet", columns=["id", "gpt4_is_bad"]).to_pydict()
    by_id = dict(zip(teacher["id"], teacher["gpt4_is_bad"]))
    by_text: dict[str, int] = {}
    for split in ("train", "dev"):
        table = pq.read_table(JIGSAW / f"{split}.parquet", columns=["id", "text"]).to_pydict()
        by_text.update((t, by_id[i]) for i, t in zip(table["id"], table["text"]) if i in by_id)

    def answer(text: str) -> float:
        label = by_text.get(text)
        return keyword_answer(text) if label is None else (yes_p if label else 1 - yes_p)

    return answer


def completion(model: str, prompt: str, answer: float | str, logprobs: bool, top_logprobs: int) -> dict:
    """A chat.completion object in the OpenAI format; P(yes) split over Yes/ yes/No/ no tokens."""
    if isinstance(answer, str):
        content, top = answer, [{"token": answer[:5], "logprob": 0.0, "bytes": None}]
    else:
        p = min(max(answer, 1e-6), 1 - 1e-6)
        content = "Yes" if p >= 0.5 else "No"
        mass = {"Yes": 0.9 * p, " yes": 0.1 * p, "No": 0.9 * (1 - p), " no": 0.1 * (1 - p)}
        top = sorted(({"token": t, "logprob": math.log(m), "bytes": None} for t, m in mass.items()),
                     key=lambda item: -item["logprob"])[:top_logprobs]
    choice: dict = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content},
                    "logprobs": None}
    if logprobs:
        choice["logprobs"] = {"content": [{"token": content[:5], "logprob": top[0]["logprob"], "bytes": None,
                                           "top_logprobs": top}]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 1,
                      "total_tokens": max(1, len(prompt) // 4) + 1}}


class FakeOpenAI:
    """A FAKE OpenAI-compatible server on 127.0.0.1 in a background thread, with request counters."""

    def __init__(self, answer: Answer = keyword_answer, latency_s: float = 0.0, fault: Fault | None = None,
                 logprobs: bool = True, batch_polls: int = 2, timeout_sleep_s: float = 2.0, port: int = 0,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.answer, self.latency_s, self.fault = answer, latency_s, fault
        self.logprobs, self.batch_polls, self.timeout_sleep_s = logprobs, batch_polls, timeout_sleep_s
        self.lock = threading.RLock()
        self.chat_requests = 0
        self.by_text: Counter = Counter()
        self.arrivals: dict[str, list[float]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []
        self.authorizations: set[str] = set()
        self.hits: Counter = Counter()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.request_log: list[dict] = []  # the server's own log: one entry per request received, in order
        self.holds: dict[str, threading.Event] = {}  # point -> released; see hold()
        self.reached: dict[str, threading.Event] = {}
        self._server = _Server((host, port), self._handler())
        self.scheme = "https" if tls is not None else "http"
        if tls is not None:  # HTTPS with the given server context (e.g. a trustme certificate)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self._server.server_address[0]}:{self.port}/v1"

    def hold(self, point: str) -> threading.Event:
        """Stop the next request at `point` until released: "files.create:before" (nothing stored yet),
        "batches.create:before", "batches.create:after" (created, the answer not sent). Returns the event
        set when a request reaches the point; `release(point)` lets it go (e.g. after the client was killed)."""
        self.holds[point] = threading.Event()
        self.reached[point] = threading.Event()
        return self.reached[point]

    def release(self, point: str) -> None:
        self.holds.pop(point).set()

    def _checkpoint(self, point: str) -> None:
        if point in self.holds:
            self.reached[point].set()
            self.holds[point].wait(timeout=120)

    def _log(self, kind: str, texts: list[str], **fields) -> None:
        with self.lock:
            self.request_log.append({"time": time.time(), "kind": kind, "n": len(texts),
                                     "text_sha256": [hashlib.sha256(t.encode()).hexdigest() for t in texts],
                                     **fields})

    def sent_text_hashes(self) -> Counter:
        """How often each record text (by SHA-256) reached this server, in chat requests or uploaded batch files."""
        return Counter(h for entry in self.request_log for h in entry["text_sha256"])

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- answering ------------------------------------------------------------------------------

    def chat(self, body: dict) -> tuple[int, dict | str, dict]:
        """(status, JSON body or raw text, headers) for one chat request, after its fault if any."""
        prompt = body["messages"][-1]["content"]
        text = record_text(prompt)
        with self.lock:
            self.by_text[text] += 1
            self.arrivals.setdefault(text, []).append(time.monotonic())
            attempt = self.by_text[text]
            self.prompts.append(prompt)
        fault = self.fault(text, attempt) if self.fault else None
        if fault and fault.startswith("slow:"):
            time.sleep(float(fault.split(":")[1]))
        elif fault == "timeout":
            time.sleep(self.timeout_sleep_s)
        elif fault and fault.startswith("429"):
            retry_after = fault.split(":")[1] if ":" in fault else None
            return 429, _error("Rate limit reached (fake)", "rate_limit_exceeded"), (
                {"Retry-After": retry_after} if retry_after else {})
        elif fault in ("500", "503", "401"):
            return int(fault), _error(f"fake {fault}", "server_error"), {}
        elif fault == "400-logprobs":
            if body.get("logprobs"):
                return 400, _error("logprobs are not supported by this model (fake)", "invalid_request_error"), {}
        elif fault == "malformed":
            return 200, "{this is not json", {}
        want_logprobs = self.logprobs and bool(body.get("logprobs"))
        return 200, completion(body.get("model", "fake"), prompt, self.answer(text), want_logprobs,
                               int(body.get("top_logprobs") or 5)), {}

    def _run_batch(self, batch: dict) -> None:
        lines = self.files[batch["input_file_id"]]["content"].decode().splitlines()
        out, errors = [], []
        for line in filter(None, lines):
            item = json.loads(line)
            status, body, _ = self.chat(item["body"])
            row = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": item["custom_id"],
                   "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                   "error": None}
            (out if status == 200 and isinstance(body, dict) else errors).append(row)
        batch["output_file_id"] = self._store(b"".join(json.dumps(r).encode() + b"\n" for r in out),
                                              "batch_output.jsonl", "batch_output") if out else None
        batch["error_file_id"] = self._store(b"".join(json.dumps(r).encode() + b"\n" for r in errors),
                                             "batch_errors.jsonl", "batch_output") if errors else None
        batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)}
        batch["status"], batch["completed_at"] = "completed", int(time.time())

    def _store(self, content: bytes, filename: str, purpose: str) -> str:
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": filename, "purpose": purpose, "status": "processed", "content": content}
        return file_id

    # ---- HTTP -----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()  # answer at once: no Nagle delay between the header and the body writes
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict | str | bytes, headers: dict | None = None) -> None:
                data = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                raw = self._body()
                with fake.lock:
                    fake.authorizations.add(self.headers.get("Authorization", ""))
                    fake.hits["via_proxy"] += self.path.startswith("http")  # absolute-form: sent through a proxy
                if self.path.endswith("/chat/completions"):
                    self._chat(raw)
                elif self.path.endswith("/files"):
                    self._upload(raw)
                elif self.path.endswith("/batches"):
                    self._create_batch(raw)
                else:
                    self._send(404, _error(f"no route {self.path} (fake)", "not_found"))

            def _chat(self, raw: bytes) -> None:
                body = json.loads(raw)
                fake._log("chat", [record_text(body["messages"][-1]["content"])])
                fake.hits["chat"] += 1
                with fake.lock:
                    fake.chat_requests += 1
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.latency_s)
                    self._send(*fake.chat(body))
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _upload(self, raw: bytes) -> None:
                fake._checkpoint("files.create:before")
                fields, filename = _multipart(self.headers["Content-Type"], raw)
                lines = [json.loads(line) for line in fields["file"].decode().splitlines() if line.strip()]
                fake._log("files.create", [record_text(item["body"]["messages"][-1]["content"]) for item in lines],
                          filename=filename)
                fake.hits["files.create"] += 1
                file_id = fake._store(fields["file"], filename, fields["purpose"].decode())
                self._send(200, _public(fake.files[file_id]))

            def _create_batch(self, raw: bytes) -> None:
                fake._checkpoint("batches.create:before")
                request = json.loads(raw)
                batch_id = f"batch_{uuid.uuid4().hex[:16]}"
                with fake.lock:
                    fake.hits["batches.create"] += 1
                    fake.batches[batch_id] = {
                        "id": batch_id, "object": "batch", "endpoint": request["endpoint"],
                        "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
                        "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                        "error_file_id": None, "polls": 0, "metadata": request.get("metadata") or {},
                        "request_counts": {"total": 0, "completed": 0, "failed": 0}}
                fake._log("batches.create", [], batch_id=batch_id)
                fake._checkpoint("batches.create:after")
                self._send(200, _public(fake.batches[batch_id]))

            def _list(self, items: list[dict]) -> None:
                data = [_public(item) for item in sorted(items, key=lambda item: -item["created_at"])]
                self._send(200, {"object": "list", "data": data, "has_more": False,
                                 "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None})

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path.endswith("/batches"):
                    fake.hits["batches.list"] += 1
                    self._list(list(fake.batches.values()))
                    return
                if path.endswith("/files"):
                    fake.hits["files.list"] += 1
                    self._list(list(fake.files.values()))
                    return
                match = re.search(r"/files/([^/]+)/content$", self.path)
                if match and match[1] in fake.files:
                    fake.hits["files.content"] += 1
                    self._send(200, fake.files[match[1]]["content"])
                    return
                match = re.search(r"/batches/([^/]+)$", self.path)
                if match and match[1] in fake.batches:
                    fake.hits["batches.retrieve"] += 1
                    batch = fake.batches[match[1]]
                    with fake.lock:
                        batch["polls"] += 1
                        if batch["status"] != "completed":
                            batch["status"] = "in_progress"
                            if batch["polls"] >= fake.batch_polls:
                                fake._run_batch(batch)
                    self._send(200, _public(batch))
                    return
                self._send(404, _error(f"no route {self.path} (fake)", "not_found"))

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("content", "polls")}


def _multipart(content_type: str, raw: bytes) -> tuple[dict[str, bytes], str]:
    """The fields of a multipart form, and the uploaded file's name."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    parts = list(message.iter_parts())
    filename = next((part.get_filename() for part in parts if part.get_filename()), "input.jsonl")
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in parts}, filename


def main() -> None:
    parser = argparse.ArgumentParser(description="FAKE OpenAI-compatible server (for tests and benchmarks only).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per chat request")
    parser.add_argument("--replay", action="store_true", help="answer with the recorded GPT-4 Jigsaw answers")
    args = parser.parse_args()
    fake = FakeOpenAI(answer=gpt4_replay() if args.replay else keyword_answer, latency_s=args.latency,
                      port=args.port)
    with fake:
        print(f"FAKE OpenAI server at {fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
