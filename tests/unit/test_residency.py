"""Residency against the obvious bypasses (issue 13): every hostile endpoint is refused BEFORE any connection.

Each case runs the whole teacher (creation, then one vote) with two safety nets that hold even if the guard
is broken: a stub resolver (`stub_dns`: no real DNS, unknown names fail) and a TRAP on
`socket.socket.connect` / `socket.create_connection` that records and blocks every attempt to a non-loopback
address. A case passes only when the guard refused it, with a message saying nothing was sent, AND the trap
saw nothing. The allowed cases run against the loopback FAKE server.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import pytest
import trustme
from fake_openai import FakeOpenAI, stub_dns

from assay.labeling.teacher import Guard, LlmTeacher, LlmTeacherError, ResidencyError, residency
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.02, max_retries=0, request_timeout_s=5)
OUTSIDE = "93.184.216.34"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
LISTED = ["https://llm.example.eu"]
DNS = {"llm.example.eu.evil.com": [OUTSIDE], "evil.com": [OUTSIDE], "evil-llm.example.eu": [OUTSIDE],
       "llm.example.eu-evil.com": [OUTSIDE], "api.openai.com": ["162.159.140.245"],
       "llm.xn--exmple-4nf.eu": [OUTSIDE], "vllm.internal": ["8.8.8.8"], "tgi.corp": ["52.1.2.3"],
       "mixed.internal": ["10.0.0.5", "8.8.8.8"], "six.internal": ["10.0.0.5", "2606:4700::1111"],
       "llm.example.eu": ["10.20.0.7"], "cidr.example.eu": [OUTSIDE], "half.example.eu": ["10.20.0.8", OUTSIDE],
       "zero.internal": ["0.0.0.0"]}


class Trap:
    """Records every connection attempt; blocks (ConnectionRefusedError) those to non-loopback addresses."""

    def __init__(self) -> None:
        self.blocked: list[tuple] = []

    def check(self, address) -> None:
        host = address[0] if isinstance(address, tuple) else address
        try:
            loopback = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            loopback = False  # a name handed to connect() directly: never expected, always blocked
        if not loopback:
            self.blocked.append(address)
            raise ConnectionRefusedError(f"TRAP: connection to {address} blocked by the test")


@pytest.fixture
def trap(monkeypatch) -> Trap:
    trap = Trap()
    connect, create_connection = socket.socket.connect, socket.create_connection

    def guarded_connect(self, address):
        trap.check(address)
        return connect(self, address)

    def guarded_create_connection(address, *args, **kwargs):
        trap.check(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    for name in PROXY_VARIABLES + ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-test")
    return trap


def source(url: str) -> LlmSource:
    return LlmSource(kind="llm", name="gpt", base_url=url, model="fake-model", api_key_env="ASSAY_TEST_KEY")


def attempt(url: str, settings: Settings, run_dir) -> BaseException | None:
    """Create the teacher and ask one record; the error that stopped it, or None when it answered."""
    try:
        teacher = LlmTeacher(SPEC, source(url), run_dir, settings, progress=False)
        table = teacher.vote(["a"], ["hello there"])
    except (ResidencyError, LlmTeacherError, ValueError) as error:
        return error
    return None if table["vote"][0].as_py() != -1 else AssertionError("abstained without an error")


ON_PREM = dict(residency="on-prem")
HOSTILE = [  # (case, settings, url)
    ("prefix: listed URL + more labels", dict(allowed_endpoints=LISTED), "https://llm.example.eu.evil.com/v1"),
    ("prefix: listed host + dash suffix", dict(allowed_endpoints=["llm.example.eu"]), "https://llm.example.eu-evil.com/v1"),
    ("prefix: look-alike sibling name", dict(allowed_endpoints=["llm.example.eu"]), "https://evil-llm.example.eu/v1"),
    ("user-info: listed URL before @", dict(allowed_endpoints=LISTED), "https://llm.example.eu@evil.com/v1"),
    ("user-info: user:password on a listed host", dict(allowed_endpoints=LISTED), "https://u:p@llm.example.eu/v1"),
    ("user-info: backslash before @", dict(allowed_endpoints=LISTED), "https://llm.example.eu\\@evil.com/v1"),
    ("numeric: dotless decimal", ON_PREM, "http://134744072/v1"),
    ("numeric: hex", ON_PREM, "http://0x08080808/v1"),
    ("numeric: octal dotted", ON_PREM, "http://010.010.010.010/v1"),
    ("numeric: hex dotted", ON_PREM, "http://0x8.0x8.0x8.0x8/v1"),
    ("numeric: short form a.b.c", ON_PREM, "http://8.8.2056/v1"),
    ("numeric: octal loopback look-alike", dict(allowed_endpoints=["127.0.0.0/8"]), "http://0177.0.0.1/v1"),
    ("IPv6: IPv4-mapped outside", ON_PREM, "http://[::ffff:8.8.8.8]/v1"),
    ("IPv6: IPv4-mapped in hex", ON_PREM, "http://[::ffff:808:808]/v1"),
    ("IPv6: bracketed public", ON_PREM, "http://[2001:4860:4860::8888]:8000/v1"),
    ("IPv6: NAT64 of a public IPv4", ON_PREM, "http://[64:ff9b::808:808]/v1"),
    ("IPv6: zone id", ON_PREM, "http://[fe80::1%25eth0]/v1"),
    ("trailing dot on an outside name", ON_PREM, "http://api.openai.com./v1"),
    ("mixed case of an outside name", ON_PREM, "https://API.OpenAI.com/v1"),
    ("mixed case + prefix trick", dict(allowed_endpoints=LISTED), "HTTPS://LLM.EXAMPLE.EU.EVIL.COM/v1"),
    ("IDNA look-alike (Cyrillic a)", dict(allowed_endpoints=["llm.example.eu"]), "https://llm.ex\u0430mple.eu/v1"),
    ("IDNA fullwidth dot makes a suffix", dict(allowed_endpoints=["llm.example.eu"]), "https://llm.example.eu\uff0eevil.com/v1"),
    ("name resolving outside (.internal)", ON_PREM, "http://vllm.internal:8000/v1"),
    ("name resolving outside (.corp)", ON_PREM, "http://tgi.corp/v1"),
    ("name: one inside + one outside A", ON_PREM, "http://mixed.internal/v1"),
    ("name: inside A + outside AAAA", ON_PREM, "http://six.internal/v1"),
    ("name that does not resolve (fail closed)", ON_PREM, "http://nowhere.internal/v1"),
    ("unspecified address 0.0.0.0", ON_PREM, "http://zero.internal:8000/v1"),
    ("CIDR list: name resolving outside it", dict(allowed_endpoints=["10.20.0.0/16"]), "https://cidr.example.eu/v1"),
    ("CIDR list: one address in, one out", dict(allowed_endpoints=["10.20.0.0/16"]), "https://half.example.eu/v1"),
    ("listed URL, other port", dict(allowed_endpoints=LISTED), "https://llm.example.eu:8443/v1"),
    ("listed URL, other scheme", dict(allowed_endpoints=LISTED), "http://llm.example.eu/v1"),
    ("percent-escaped host", ON_PREM, "http://%38.8.8.8/v1"),
    ("not http(s)", ON_PREM, "ftp://10.0.0.5/v1"),
    ("proxy in assay.yaml outside (on-prem)", dict(residency="on-prem", proxy=f"http://{OUTSIDE}:3128"),
     "http://127.0.0.1:9/v1"),
    ("proxy in assay.yaml not listed (cloud)", dict(allowed_endpoints=["127.0.0.0/8"], proxy="http://evil.com:3128"),
     "http://127.0.0.1:9/v1"),
]


@pytest.mark.parametrize("case, settings, url", HOSTILE, ids=[case for case, _, _ in HOSTILE])
def test_hostile_endpoint_is_refused_before_any_connection(case, settings, url, trap, monkeypatch, tmp_path):
    asked = stub_dns(monkeypatch, DNS)
    try:
        error = attempt(url, Settings(**FAST, **settings), tmp_path)
    except Exception as unexpected:  # noqa: BLE001 - reported below
        error = unexpected
    assert not trap.blocked, f"{case}: a connection was attempted: {trap.blocked}"
    assert isinstance(error, (ResidencyError, LlmTeacherError, ValueError)), f"{case}: not refused ({error!r})"
    assert "nothing was sent" in str(error) or "fix" in str(error), f"{case}: the message says no fix: {error}"
    assert all("evil" not in name or settings.get("proxy") for name in asked), f"{case}: looked up {asked}"


def test_the_table_covers_the_issue():
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize("url", ["http://vllm.internal:8000/v1", "http://134744072/v1", "http://[::ffff:8.8.8.8]/v1"])
def test_the_trap_catches_what_a_broken_guard_lets_through(url, trap, monkeypatch, tmp_path):
    """The safety net is real: with the guard switched off, the trap sees (and blocks) the outside connection."""
    def let_through(self, url: str, what: str = "endpoint"):
        parts = urlsplit(url)
        self._pins[((parts.hostname or "").lower(), parts.port or 80)] = None
    monkeypatch.setattr(Guard, "vet", let_through)
    monkeypatch.setattr(Guard, "addresses", lambda self, host, port: residency.resolve(host, port))
    stub_dns(monkeypatch, DNS)
    attempt(url, Settings(**FAST, **ON_PREM), tmp_path)
    assert trap.blocked and all(address[0] == "8.8.8.8" for address in trap.blocked)


def test_a_rebinding_resolver_cannot_move_the_connection(trap, monkeypatch, tmp_path):
    """The first answer is checked and PINNED: later answers (outside) are never asked for nor dialled."""
    answers = iter([["127.0.0.9"]] + [["8.8.8.8"]] * 100)
    asked = stub_dns(monkeypatch, {"vllm.internal": lambda: next(answers)})
    with FakeOpenAI(host="127.0.0.9") as fake:
        teacher = LlmTeacher(SPEC, source(f"http://vllm.internal:{fake.port}/v1"), tmp_path,
                             Settings(**FAST, residency="on-prem", concurrency=2), progress=False)
        table = teacher.vote([f"r{i}" for i in range(6)], [f"text {i}" for i in range(6)])
    assert -1 not in table["vote"].to_pylist() and fake.chat_requests == 6
    assert asked == ["vllm.internal"] and not trap.blocked


def test_a_rebinding_resolver_is_refused_when_its_first_answer_is_outside(trap, monkeypatch, tmp_path):
    answers = iter([["8.8.8.8"]] + [["127.0.0.1"]] * 100)
    stub_dns(monkeypatch, {"vllm.internal": lambda: next(answers)})
    error = attempt("http://vllm.internal:8000/v1", Settings(**FAST, residency="on-prem"), tmp_path)
    assert isinstance(error, ResidencyError) and "8.8.8.8" in str(error) and not trap.blocked


@pytest.mark.parametrize("residency", ["on-prem", "cloud"])
def test_environment_proxies_are_ignored_in_both_modes(residency, trap, monkeypatch, tmp_path):
    stub_dns(monkeypatch, {})
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://{OUTSIDE}:3128")
    with FakeOpenAI() as fake:
        error = attempt(fake.base_url, Settings(**FAST, residency=residency), tmp_path)
        assert error is None and fake.chat_requests == 1 and not fake.hits["via_proxy"]
    assert not trap.blocked


@pytest.mark.parametrize("case, host, url_host, settings", [
    ("loopback vLLM (on-prem)", "127.0.0.1", "127.0.0.1", ON_PREM),
    ("a name the stub resolves to 127.0.0.x", "127.0.0.7", "vllm.internal", ON_PREM),
    ("trailing dot and mixed case", "127.0.0.7", "VLLM.Internal.", ON_PREM),
    ("a listed scheme+host+port", "127.0.0.8", "llm.example.eu", {}),
    ("a listed host name (on-prem, inside address)", "127.0.0.8", "llm.example.eu", ON_PREM),
])
def test_allowed_endpoints_still_work(case, host, url_host, settings, trap, monkeypatch, tmp_path):
    stub_dns(monkeypatch, {"vllm.internal": ["127.0.0.7"], "llm.example.eu": ["127.0.0.8"]})
    with FakeOpenAI(host=host) as fake:
        url = f"http://{url_host}:{fake.port}/v1"
        listed = {"allowed_endpoints": [f"http://llm.example.eu:{fake.port}" if not settings else "llm.example.eu"]} \
            if url_host == "llm.example.eu" else {}
        error = attempt(url, Settings(**FAST, **settings, **listed), tmp_path)
        assert error is None, f"{case}: {error}"
        assert fake.chat_requests == 1
    assert not trap.blocked


def test_a_configured_proxy_is_vetted_and_used(trap, monkeypatch, tmp_path):
    """A proxy named in assay.yaml (here the FAKE itself, on loopback) carries the request; the target is
    checked by name and address but never dialled."""
    asked = stub_dns(monkeypatch, {"llm.example.eu": ["10.20.0.7"]})
    with FakeOpenAI() as proxy:
        settings = Settings(**FAST, residency="on-prem", proxy=f"http://127.0.0.1:{proxy.port}")
        assert attempt("http://llm.example.eu/v1", settings, tmp_path) is None
        assert proxy.hits["via_proxy"] == 1 and proxy.chat_requests == 1
    assert asked == ["llm.example.eu"] and not trap.blocked


def test_tls_is_verified_against_the_name_while_the_checked_address_is_dialled(trap, monkeypatch, tmp_path):
    """Pinning dials the IP but keeps the name for TLS: the certificate must match the endpoint's host name."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("llm.example.eu").configure_cert(server)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    stub_dns(monkeypatch, {"llm.example.eu": ["127.0.0.8"], "other.example.eu": ["127.0.0.8"]})
    settings = Settings(**FAST, residency="on-prem")
    with FakeOpenAI(host="127.0.0.8", tls=server) as fake:
        assert attempt(f"https://llm.example.eu:{fake.port}/v1", settings, tmp_path / "a") is None
        assert attempt(f"https://other.example.eu:{fake.port}/v1", settings, tmp_path / "b") is not None
        assert fake.chat_requests == 1  # the certificate does not name other.example.eu: refused in the handshake
    reasons = (tmp_path / "b" / "llm" / "failures" / "is_rude.gpt.jsonl").read_text()
    assert "APIConnectionError" in reasons and not trap.blocked


def test_a_connection_to_an_unchecked_host_is_refused():
    guard = Guard(Settings())
    guard.vet("https://api.example.com/v1")
    with pytest.raises(ResidencyError, match="never checked"):
        guard.addresses("evil.com", 443)


@pytest.mark.parametrize("entry", ["https://llm.example.eu/v1", "http://u@llm.example.eu", "10.0.0.0/33",
                                   "0x0a000001", "bad host"])
def test_allow_list_entries_that_cannot_match_exactly_are_refused_in_the_settings(entry):
    with pytest.raises(ValueError, match="allow-list entr|not a valid|non-canonical"):
        Settings(allowed_endpoints=[entry])


def test_a_proxy_with_credentials_is_refused_in_the_settings():
    with pytest.raises(ValueError, match="user-info"):
        Settings(proxy="http://user:secret@10.0.0.1:3128")
