"""Load a folder of question YAML files, reporting every problem with file, line, field and a hint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .questions import SOURCE_KINDS, LabelsFileSource, LlmSource, QuestionSpec

QUESTION_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a question file."""

    file: Path
    line: int | None
    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        text = f"{where}: {self.field}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class QuestionSpecError(ValueError):
    """Raised when a question folder has problems; carries all of them at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at pydantic location `loc`, or of its closest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                continue  # a missing field, or a union tag (e.g. 'rules') that has no YAML node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue
        line = node.start_mark.line + 1
    return line


def _hint(error: dict[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "union_tag_invalid" or (kind == "union_tag_not_found" and loc and loc[0] == "sources"):
        return f"kind must be one of: {', '.join(SOURCE_KINDS)}"
    if kind == "extra_forbidden":
        return "remove it, or check its spelling against `assay questions schema`"
    if kind == "missing":
        return "add this field"
    if "regular expression" in str(error.get("msg", "")):
        return "escape special characters such as ( [ + * ? with a backslash"
    if loc and loc[-1] == "id":
        return "e.g. is_complaint"
    return ""


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in SOURCE_KINDS) or "(file)"


def _parse_file(path: Path) -> tuple[QuestionSpec | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        return None, [Problem(path, None, "(file)", f"not UTF-8: {exc}", "save the file as UTF-8")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        return None, [Problem(path, line, "(file)", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                              "check indentation and quote strings containing ':' or '#'")]
    if not isinstance(data, dict):
        return None, [Problem(path, 1, "(file)", "a question file must be a YAML mapping", "start with `id: ...`")]
    try:
        return QuestionSpec.model_validate(data), []
    except ValidationError as exc:
        problems = [
            Problem(path, _line_of(node, tuple(err["loc"])), _field_name(tuple(err["loc"])),
                    err["msg"].removeprefix("Value error, "), _hint(err))
            for err in exc.errors()
        ]
        return None, problems


def _environment_problems(path: Path, spec: QuestionSpec, check_env: bool) -> list[Problem]:
    node = yaml.compose(path.read_text(encoding="utf-8"))
    problems = []
    for index, source in enumerate(spec.sources):
        line = _line_of(node, ("sources", index))
        if isinstance(source, LlmSource) and check_env and not os.environ.get(source.api_key_env):
            problems.append(Problem(path, line, f"sources.{index}.api_key_env",
                                    f"environment variable {source.api_key_env} is not set",
                                    f"export {source.api_key_env}=... before labelling"))
        if isinstance(source, LabelsFileSource) and not resolve(path, source.path).exists():
            problems.append(Problem(path, line, f"sources.{index}.path", f"file {source.path} does not exist",
                                    "paths are relative to the question file's folder"))
    return problems


def resolve(question_file: Path, path: str) -> Path:
    """Resolve a path written in a question file against that file's folder."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else (question_file.parent / candidate).resolve()


@dataclass(frozen=True)
class LoadedQuestion:
    """A validated spec and the file it came from."""

    spec: QuestionSpec
    path: Path


def question_files(folder: Path) -> list[Path]:
    """The question files of a folder (or a single file), sorted."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise QuestionSpecError([Problem(folder, None, "(folder)", "no such folder", "pass the questions folder")])
    return sorted(p for p in folder.iterdir() if p.suffix in QUESTION_SUFFIXES)


def load_questions(folder: str | Path, *, check_env: bool = False) -> list[LoadedQuestion]:
    """Validate every question file in `folder`; raise QuestionSpecError listing all problems.

    `check_env` also requires the API-key environment variables of LLM sources to be set.
    """
    files = question_files(Path(folder))
    problems: list[Problem] = []
    loaded: list[LoadedQuestion] = []
    if not files:
        problems.append(Problem(Path(folder), None, "(folder)", "no .yaml question files", "add one file per question"))
    for path in files:
        spec, file_problems = _parse_file(path)
        problems += file_problems
        if spec is not None:
            problems += _environment_problems(path, spec, check_env)
            loaded.append(LoadedQuestion(spec, path))
    first_file: dict[str, Path] = {}
    for item in loaded:
        if item.spec.id in first_file:
            node = yaml.compose(item.path.read_text(encoding="utf-8"))
            problems.append(Problem(item.path, _line_of(node, ("id",)), "id",
                                    f"duplicate id {item.spec.id!r}, also in {first_file[item.spec.id].name}",
                                    "ids must be unique across the folder"))
        first_file.setdefault(item.spec.id, item.path)
    if problems:
        raise QuestionSpecError(problems)
    return loaded


def select(questions: list[LoadedQuestion], only: str | None) -> list[LoadedQuestion]:
    """Keep the questions named in a comma-separated `only` list (all when None); unknown names are an error."""
    if not only:
        return questions
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    known = {q.spec.id for q in questions}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown question id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [q for q in questions if q.spec.id in wanted]
