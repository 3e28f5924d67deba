"""EU on-prem guarantees: residency refuses before any connection, PII masking, the audit log, and the
API key never written anywhere (cache, audit, failures, batch files, logs, console)."""

import json
import logging
import socket

import pytest
from fake_openai import FakeOpenAI, stub_dns

from assay.labeling.teacher import Guard, LlmTeacher, LlmTeacherError
from assay.labeling.teacher.audit import sha256
from assay.labeling.teacher.masking import Masker
from assay.labeling.teacher.residency import ResidencyError, check_endpoint
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec, looks_like_key

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


def test_on_prem_without_a_list_allows_inside_addresses_only(monkeypatch):
    stub_dns(monkeypatch, {"vllm": ["10.1.2.3"], "localhost": ["127.0.0.1", "::1"],
                           "api.openai.com": ["162.159.140.245"]})
    settings = Settings(residency="on-prem")
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1", "http://10.1.2.3/v1",
                "http://192.168.0.10/v1", "http://172.20.0.5/v1", "http://vllm:8000/v1", "http://[fd00::5]/v1"):
        check_endpoint(url, settings)
    for url in ("https://api.openai.com/v1", "http://8.8.8.8/v1", "http://100.64.0.1/v1", "http://172.32.0.1/v1"):
        with pytest.raises(ResidencyError, match="outside the on-prem network.*nothing was sent.*fix"):
            check_endpoint(url, settings)


def test_allow_list_entries_match_exactly(monkeypatch):
    outside = ["93.184.216.34"]
    stub_dns(monkeypatch, {"llm.example.eu": ["10.20.3.4"], "api.example.com": outside, "named.example.com": outside,
                           "evil-llm.example.eu": outside, "llm.example.eu.evil.com": outside})
    settings = Settings(allowed_endpoints=["llm.example.eu", "https://api.example.com:8443", "10.20.0.0/16"])
    check_endpoint("https://llm.example.eu:8443/v1", settings)  # a host name: any scheme and port
    check_endpoint("https://api.example.com:8443/eu/v1", settings)
    check_endpoint("http://10.20.3.4:8000/v1", settings)
    for refused in ("https://api.example.com/v1", "http://10.21.0.1/v1", "https://evil-llm.example.eu/v1",
                    "https://llm.example.eu.evil.com/v1", "https://named.example.com/v1"):
        with pytest.raises(ResidencyError, match="not in allowed_endpoints"):
            check_endpoint(refused, settings)
    check_endpoint("https://api.openai.com/v1", Settings())  # cloud without a list: anything (resolved on connect)


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
    assert [line["event"] for line in lines] == ["send", "answered"]  # the send line is written first
    send, entry = lines
    masked_text = "you idiot, write to [EMAIL] or [PHONE]"
    assert send["masked"] == {"email": 1, "phone": 1} and send["chars"] == len(masked_text) and send["attempt"] == 1
    for line in lines:
        assert line["text_sha256"] == sha256(masked_text) and line["record_id_sha256"] == sha256("cust-42")
        assert line["endpoint"] == fake.base_url and line["model"] == "fake-model"
    assert entry["outcome"] == "answered" and entry["attempts"] == 1
    assert entry["tokens_in"] > 0 and set(entry) >= {"time", "question_id", "source", "mode"}
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
    teacher.guard = Guard(Settings(**FAST, allowed_endpoints=["vllm.internal"]))  # tightened after creation
    with pytest.raises(LlmTeacherError, match="not in allowed_endpoints"):
        teacher.vote(["a", "b"], ["hello", "world"])
    assert_no_connection(listener)


@pytest.mark.parametrize("name", ["a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "sk-test-SECRET-do-not-log-4242",
                                  "Zx9Qw8Er7Ty6Ui5Op4As3Df2"])
def test_a_key_in_api_key_env_is_refused_without_echoing_it(name, tmp_path, capsys):
    source = llm_source("http://127.0.0.1:9/v1").model_copy(update={"api_key_env": name})
    with pytest.raises(LlmTeacherError, match="looks like an API key") as error:
        LlmTeacher(SPEC, source, tmp_path, Settings(), progress=False)
    captured = capsys.readouterr()
    assert name not in str(error.value) + captured.out + captured.err
    assert not list(tmp_path.rglob("audit.jsonl"))


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "AZURE_OPENAI_KEY_2", "ASSAY_TEST_KEY", "KEY"])
def test_variable_names_are_accepted(name):
    assert not looks_like_key(name)


def test_a_key_echoed_by_the_server_is_blanked(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    with FakeOpenAI(fault=lambda text, attempt: "401") as fake:
        teacher = LlmTeacher(SPEC, llm_source(fake.base_url), tmp_path, Settings(**FAST), progress=False)
        teacher.client()
        error = teacher.describe(RuntimeError(f"Incorrect API key provided: {SECRET}"))
    assert SECRET not in error and "[REDACTED]" in error
