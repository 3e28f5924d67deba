"""Question specs: the bundled folder validates; a broken folder gets every problem with file and line."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay.flows.cli import app
from assay.schemas import QuestionSpecError, json_schema, load_questions, select

ROOT = Path(__file__).resolve().parents[2]
JIGSAW = ROOT / "examples" / "questions" / "jigsaw"
runner = CliRunner()

GOOD = """\
id: is_complaint
version: 1
question: Is this message a complaint?
sources:
  - kind: rules
    yes_keywords: [refund]
"""

BROKEN = {
    "a_regex.yaml": """\
id: bad_regex
version: 1
question: Does it mention a price?
sources:
  - kind: rules
    yes_patterns: ["(unclosed"]
""",
    "b_kind.yaml": """\
id: unknown_kind
version: 1
question: Is it spam?
sources:
  - kind: telepathy
""",
    "c_dup.yaml": GOOD,
    "d_dup.yaml": GOOD,
    "e_fields.yaml": """\
id: NotSnake
version: 0
question: Is it rude?
sources:
  - kind: llm
    base_url: http://127.0.0.1:9/v1
    model: m
    api_key_env: sk-live-123
    temprature: 0
""",
    "f_yaml.yaml": "id: x\n  question: [unclosed\n",
}


def test_bundled_questions_validate():
    loaded = load_questions(JIGSAW)
    ids = {item.spec.id for item in loaded}
    assert ids == {"toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate", "is_bad"}
    is_bad = next(item.spec for item in loaded if item.spec.id == "is_bad")
    assert "labels_file" in {source.kind for source in is_bad.sources}


def test_broken_folder_reports_every_problem_with_file_and_line(tmp_path: Path):
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(QuestionSpecError) as caught:
        load_questions(tmp_path)
    problems = caught.value.problems
    by_file = {}
    for problem in problems:
        by_file.setdefault(problem.file.name, []).append(problem)
    assert set(by_file) == {"a_regex.yaml", "b_kind.yaml", "d_dup.yaml", "e_fields.yaml", "f_yaml.yaml"}
    regex = by_file["a_regex.yaml"][0]
    assert regex.line == 6 and "does not compile" in regex.message and regex.hint
    kind = by_file["b_kind.yaml"][0]
    assert kind.line == 5 and "rules" in kind.hint
    dup = by_file["d_dup.yaml"][0]
    assert dup.field == "id" and dup.line == 1 and "c_dup.yaml" in dup.message
    fields = {p.field: p for p in by_file["e_fields.yaml"]}
    assert fields["id"].line == 1 and "snake_case" in fields["id"].message
    assert fields["version"].line == 2
    assert fields["sources.0.api_key_env"].line == 8 and "NAME of an environment variable" in fields[
        "sources.0.api_key_env"].message
    assert fields["sources.0.temprature"].line == 9 and "spelling" in fields["sources.0.temprature"].hint
    assert by_file["f_yaml.yaml"][0].line == 2


def test_key_shaped_api_key_env_is_refused_without_echo(tmp_path: Path):
    key = "a3f9c2e1b7d44f0e9c8a7b6d5e4f3a2b"  # a hex Azure key: starts with a letter, so shaped like a name
    (tmp_path / "q.yaml").write_text(GOOD.replace("  - kind: rules\n    yes_keywords: [refund]\n", f"""\
  - kind: llm
    base_url: http://127.0.0.1:9/v1
    model: m
    api_key_env: {key}
"""))
    with pytest.raises(QuestionSpecError) as caught:
        load_questions(tmp_path)
    (problem,) = caught.value.problems
    assert problem.field == "sources.0.api_key_env" and "looks like an API key" in problem.message
    assert key not in str(caught.value) and key not in repr(caught.value.problems)


def test_missing_env_var_is_reported_when_checked(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("ASSAY_TEST_KEY", raising=False)
    (tmp_path / "q.yaml").write_text(GOOD.replace("  - kind: rules\n    yes_keywords: [refund]\n", """\
  - kind: llm
    base_url: http://127.0.0.1:9/v1
    model: m
    api_key_env: ASSAY_TEST_KEY
"""))
    load_questions(tmp_path)  # not checked by default
    with pytest.raises(QuestionSpecError, match="ASSAY_TEST_KEY is not set"):
        load_questions(tmp_path, check_env=True)


def test_missing_labels_file_is_reported(tmp_path: Path):
    (tmp_path / "q.yaml").write_text(GOOD.replace("  - kind: rules\n    yes_keywords: [refund]\n",
                                                  "  - kind: labels_file\n    path: nowhere.parquet\n"))
    with pytest.raises(QuestionSpecError, match="nowhere.parquet does not exist"):
        load_questions(tmp_path)


def test_source_names_default_to_kind_and_are_unique(tmp_path: Path):
    (tmp_path / "q.yaml").write_text(GOOD + "  - kind: rules\n    no_keywords: [thanks]\n")
    spec = load_questions(tmp_path)[0].spec
    assert [s.name for s in spec.sources] == ["rules", "rules_2"]


def test_select_rejects_unknown_ids():
    loaded = load_questions(JIGSAW)
    assert [q.spec.id for q in select(loaded, "threat, toxic")] == ["threat", "toxic"]
    with pytest.raises(ValueError, match="unknown question id"):
        select(loaded, "toxic,nope")


def test_cli_validate_list_and_schema(tmp_path: Path):
    ok = runner.invoke(app, ["questions", "validate", str(JIGSAW)])
    assert ok.exit_code == 0, ok.output
    assert "7 question(s) valid" in ok.output
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    bad = runner.invoke(app, ["questions", "validate", str(tmp_path)])
    assert bad.exit_code == 1
    assert "a_regex.yaml:6" in bad.output and "e_fields.yaml:9" in bad.output
    listed = runner.invoke(app, ["questions", "list", str(JIGSAW)])
    assert listed.exit_code == 0 and "identity_hate" in listed.output
    printed = runner.invoke(app, ["questions", "schema"])
    assert json.loads(printed.output)["title"] == "Assay question"


def test_published_schema_file_is_current():
    published = json.loads((ROOT / "schemas" / "question.schema.json").read_text())
    assert published == json_schema(), "run: assay questions schema --out schemas/question.schema.json"
