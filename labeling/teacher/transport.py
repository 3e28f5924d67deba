"""The HTTP side of the teacher: the API key, and an openai client whose every connection goes to an address
the residency guard checked.

`PinnedBackend` replaces httpcore's DNS lookup: httpcore asks it to connect to (host, port) and it dials
one of the addresses `Guard` pinned for that pair, keeping the name for TLS (SNI and certificate checks)
and the Host header. Environment proxies are never used; a proxy named in `assay.yaml` is vetted like an
endpoint and reached the same way. Redirects are off and the openai client's own retries are off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import httpcore2
import httpx2
import openai

from assay.schemas.questions import LlmSource, looks_like_key

from .errors import LlmTeacherError
from .residency import Guard


def check_key_name(source: LlmSource) -> None:
    """LlmTeacherError (which never shows the value) when `api_key_env` holds something shaped like a key."""
    if not source.api_key_file and looks_like_key(source.api_key_env):
        raise LlmTeacherError(f"source {source.name}: api_key_env looks like an API key, not the NAME of an "
                              "environment variable (value not shown; fix: export the key as e.g. OPENAI_API_KEY "
                              "and write api_key_env: OPENAI_API_KEY)")


def read_api_key(source: LlmSource) -> str:
    """The API key from `api_key_file` or the `api_key_env` variable; a clear error (never the value) otherwise."""
    if source.api_key_file:
        path = Path(source.api_key_file).expanduser()
        if not path.is_file():
            raise LlmTeacherError(f"source {source.name}: api_key_file {path} does not exist "
                                  "(fix: mount the secret there or use api_key_env)")
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise LlmTeacherError(f"source {source.name}: api_key_file {path} is empty")
        return key
    check_key_name(source)
    key = os.environ.get(source.api_key_env, "").strip()
    if not key:
        raise LlmTeacherError(f"source {source.name}: environment variable {source.api_key_env} is not set "
                              f"(fix: export {source.api_key_env}=...; for an endpoint without auth any value "
                              "works, e.g. EMPTY; or set api_key_file)")
    return key


class PinnedBackend(httpcore2.NetworkBackend):
    """Dials only addresses the guard checked for the (host, port) httpcore asks for."""

    def __init__(self, guard: Guard):
        self.guard = guard
        self._system = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable | None = None) -> httpcore2.NetworkStream:
        error: Exception | None = None
        for address in self.guard.addresses(host, port):  # ResidencyError for anything not vetted
            try:
                return self._system.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore2.ConnectError(f"no address to connect to for {host}:{port}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable | None = None) -> httpcore2.NetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used by the teacher client")

    def sleep(self, seconds: float) -> None:
        self._system.sleep(seconds)


class PinnedTransport(httpx2.HTTPTransport):
    """httpx's transport over a connection pool (direct, or through the vetted proxy) on `PinnedBackend`."""

    def __init__(self, guard: Guard, limits: httpx2.Limits):
        super().__init__(trust_env=False, limits=limits)
        common = dict(ssl_context=httpx2.create_ssl_context(), max_connections=limits.max_connections,
                      max_keepalive_connections=limits.max_keepalive_connections,
                      keepalive_expiry=limits.keepalive_expiry, network_backend=PinnedBackend(guard))
        if guard.proxy is None:
            self._pool = httpcore2.ConnectionPool(**common)
        else:
            proxy = guard.proxy
            self._pool = httpcore2.HTTPProxy(proxy_url=httpcore2.URL(scheme=proxy.scheme.encode(),
                                                                     host=proxy.host.encode(), port=proxy.port,
                                                                     target=b"/"), **common)


def open_client(base_url: str, api_key: str, guard: Guard, concurrency: int, timeout_s: float) -> openai.OpenAI:
    """An openai client for `base_url`: pinned connections, a per-request residency re-check, no redirects,
    no environment proxies, no client-side retries."""

    def check(request: httpx2.Request) -> None:
        guard.vet(str(request.url))

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = openai.DefaultHttpxClient(trust_env=False, follow_redirects=False, event_hooks={"request": [check]},
                                     transport=PinnedTransport(guard, limits), limits=limits)
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s, http_client=http)
