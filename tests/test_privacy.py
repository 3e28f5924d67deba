"""EU on-prem guarantees: residency refuses before any connection, PII masking, the audit log, and the
API key never written anywhere (cache, audit, failures, batch files, logs, console)."""

import json
import logging
import socket

import pytest

from assay.labeling.llm import LlmTeacher, LlmTeacherError
from assay.labeling.privacy import Masker, ResidencyError, check_endpoint, sha256
from assay.schemas.questions import LlmSource, QuestionSpec
from assay.schemas.settings import Settings
from fake_openai import FakeOpenAI

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
SECRET = "sk-test-SECRET-do-not-log-4242"
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.02, max_retries=1)


def llm_source(base_url: str, **fields) -> LlmSource:
    fields.setdefault("name", "gpt")
    return LlmSource(kind="llm", base_url=base_url, model="fake-model", api_key_env="ASSAY_TEST_KEY", **fields)


@pytest.fixture
def listener():
    """A local TCP listener that must never see a connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.3)
        yield server


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(socket.timeout):
        server.accept()


def test_allow_list_refuses_before_any_connection(listener, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    settings = Settings(residency="on-prem", allowed_endpoints=["vllm.internal", "10.20.0.0/16"])
    with pytest.raises(ResidencyError, match=r"not in allowed_endpoints .*nothing was sent .*fix: add '127.0.0.1'"):
        LlmTeacher(SPEC, llm_source(url), tmp_path, settings, progress=False)
    assert_no_connection(listener)


@pytest.mark.parametrize("url, allowed", [
    ("https://api.openai.com/v1", False), ("https://myres.openai.azure.com/openai/v1", False),
    ("http://93.184.216.34:8000/v1", False), ("http://8.8.8.8/v1", False),
    ("http://127.0.0.1:8000/v1", True), ("http://localhost:8000/v1", True), ("http://[::1]:8000/v1", True),
    ("http://10.1.2.3:8000/v1", True), ("http://192.168.0.10/v1", True), ("http://172.20.0.5/v1", True),
    ("http://vllm:8000/v1", True), ("http://vllm.internal:8000/v1", True),
    ("http://llm.svc.cluster.local/v1", True), ("http://tgi.corp/v1", True), ("http://llm.example.eu/v1", False),
])
def test_on_prem_default_allow_list(url, allowed):
    settings = Settings(residency="on-prem")
    if allowed:
        check_endpoint(url, settings)
    else:
        with pytest.raises(ResidencyError, match="residency is 'on-prem'.*allowed_endpoints"):
            check_endpoint(url, settings)


def test_allow_list_entries_hosts_prefixes_and_ranges():
    settings = Settings(allowed_endpoints=["llm.example.eu", "https://api.example.com/eu/", "10.20.0.0/16"])
    check_endpoint("https://llm.example.eu:8443/v1", settings)
    check_endpoint("https://api.example.com/eu/v1", settings)
    check_endpoint("http://10.20.3.4:8000/v1", settings)
    for refused in ("https://api.example.com/us/v1", "http://10.21.0.1/v1", "https://evil-llm.example.eu/v1",
                    "https://llm.example.eu.evil.com/v1"):
        with pytest.raises(ResidencyError):
            check_endpoint(refused, settings)
    check_endpoint("https://api.openai.com/v1", Settings())  # cloud without a list: anything goes


def test_masking_of_emails_phones_ibans_and_user_patterns():
    masker = Masker({"customer": r"CUST-\d{6}"})
    result = masker.mask("Mail jane.doe@example.co.uk or call +49 30 1234567 / (030) 123 4567, "
                         "pay DE89 3704 0044 0532 0130 00, ref CUST-123456. Born 1990-2000, see 01/02/2005.")
    assert result.text == ("Mail [EMAIL] or call [PHONE] / [PHONE], pay [IBAN], ref [CUSTOMER]. "
                           "Born 1990-2000, see 01/02/2005.")
    assert result.counts == {"email": 1, "phone": 2, "iban": 1, "customer": 1}
    assert masker.mask("IP 192.168.100.200 at 12:30 on 2006-01-15, 3.14159").counts == {}


def test_masked_text_is_sent_and_the_audit_log_holds_no_text(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    text = "you idiot, write to jane.doe@example.com or +44 20 7946 0958"
    with FakeOpenAI() as fake:
        teacher = LlmTeacher(SPEC, llm_source(fake.base_url), tmp_path, Settings(mask_pii=True), progress=False)
        teacher.vote(["cust-42"], [text])
    sent = fake.prompts[0]
    assert "[EMAIL]" in sent and "[PHONE]" in sent and "jane.doe" not in sent and "7946" not in sent
    lines = [json.loads(line) for line in (tmp_path / "llm" / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    entry = lines[0]
    masked_text = "you idiot, write to [EMAIL] or [PHONE]"
    assert entry["masked"] == {"email": 1, "phone": 1} and entry["chars"] == len(masked_text)
    assert entry["text_sha256"] == sha256(masked_text) and entry["record_id_sha256"] == sha256("cust-42")
    assert entry["endpoint"] == fake.base_url and entry["model"] == "fake-model" and entry["outcome"] == "answered"
    assert entry["tokens_in"] > 0 and set(entry) >= {"time", "question_id", "source", "attempts"}
    raw = (tmp_path / "llm" / "audit.jsonl").read_text()
    assert "idiot" not in raw and "cust-42" not in raw and "jane" not in raw
    assert teacher.summary()["masked"] == {"email": 1, "phone": 1}


def test_the_api_key_is_never_written_or_logged(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    texts = ["hello", "dead one", "you idiot"]
    with FakeOpenAI(fault=lambda text, attempt: "500" if "dead" in text else None) as fake:
        online = LlmTeacher(SPEC, llm_source(fake.base_url), tmp_path, Settings(**FAST), progress=True)
        online.vote(["a", "b", "c"], texts)
        online.print_summary()
        batch = LlmTeacher(SPEC, llm_source(fake.base_url, mode="batch", name="gpt_batch"), tmp_path,
                           Settings(**FAST, batch_poll_s=0.01), progress=True)
        batch.vote(["a", "b", "c"], [t + " again" for t in texts])
    assert fake.authorizations == {f"Bearer {SECRET}"}  # the key was used ...
    written = list(tmp_path.rglob("*"))
    assert {"cache.sqlite", "audit.jsonl", "is_rude.gpt.jsonl", "ledger.sqlite", "is_rude.gpt_batch.json"} <= \
        {p.name for p in written}
    for path in written:  # ... and is nowhere on disk, in the logs or on the console
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


def test_key_from_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ASSAY_TEST_KEY", raising=False)
    secret_file = tmp_path / "openai.key"
    secret_file.write_text(SECRET + "\n")
    with FakeOpenAI() as fake:
        teacher = LlmTeacher(SPEC, llm_source(fake.base_url, api_key_file=str(secret_file)), tmp_path / "run",
                             Settings(), progress=False)
        teacher.vote(["a"], ["hello"])
    assert fake.authorizations == {f"Bearer {SECRET}"}


def test_every_request_is_checked_again_before_it_is_sent(listener, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    teacher = LlmTeacher(SPEC, llm_source(url), tmp_path, Settings(**FAST), progress=False)
    teacher.settings = Settings(**FAST, allowed_endpoints=["vllm.internal"])  # tightened after creation
    with pytest.raises(LlmTeacherError, match="not in allowed_endpoints"):
        teacher.vote(["a", "b"], ["hello", "world"])
    assert_no_connection(listener)


def test_on_prem_ignores_proxy_variables(listener, tmp_path, monkeypatch):
    """A proxy from the environment could carry text out of the network: on-prem never uses one."""
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI() as fake:
        on_prem = Settings(**{**FAST, "max_retries": 0}, residency="on-prem")
        table = LlmTeacher(SPEC, llm_source(fake.base_url), tmp_path / "a", on_prem, progress=False).vote(["a"], ["hi"])
        assert table["vote"][0].as_py() != -1 and fake.chat_requests == 1
        assert_no_connection(listener)
        cloud = Settings(**{**FAST, "max_retries": 0}, request_timeout_s=0.3)  # cloud honours the proxy (control)
        LlmTeacher(SPEC, llm_source(fake.base_url), tmp_path / "b", cloud, progress=False).vote(["b"], ["hi"])
        connection, _ = listener.accept()
        connection.close()
