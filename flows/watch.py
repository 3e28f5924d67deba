"""Notice new and changed question files and emit ``assay.question.added`` / ``assay.question.changed``.

A question is *added* when the registry has no adapter for its id, *changed* when no saved adapter was
trained on its current spec version. Each (question, spec) is announced once: what was announced is
kept in a small state file, so a restarted watcher does not start the same onboarding twice. A file
that does not validate is reported (file, line, field, hint) and skipped; the others go ahead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from assay.flows import events
from assay.flows.pipeline import spec_digest
from assay.schemas import QuestionSpecError, load_questions
from assay.schemas.files import write_text_atomic
from assay.schemas.loader import question_files

STATE_FILE = ".assay-watch.json"


@dataclass(frozen=True)
class QuestionChange:
    """A question file that needs onboarding."""

    question_id: str
    path: str
    spec_version: int
    kind: str  # "added" or "changed"
    digest: str


def question_changes(folder: str | Path, registry: str | Path) -> tuple[list[QuestionChange], list[str]]:
    """Questions in ``folder`` that the registry has no adapter for (or none for this spec version),
    and the problems of the files that do not validate."""
    from assay.schemas.registry import Registry

    reg = Registry(registry)
    changes, problems = [], []
    for path in question_files(Path(folder)):
        try:
            question = load_questions(path)[0]
        except QuestionSpecError as error:
            problems += [str(problem) for problem in error.problems]
            continue
        spec = question.spec
        versions = reg.versions(spec.id)
        if any(v.manifest.get("spec_version") == spec.version for v in versions):
            continue
        changes.append(QuestionChange(spec.id, str(path.resolve()), spec.version,
                                      "changed" if versions else "added", spec_digest(question)))
    return changes, problems


def _load_state(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.is_file() else {}


def announce(folder: str | Path, registry: str | Path,
             state: str | Path | None = None) -> tuple[list[QuestionChange], list[str]]:
    """Emit an event for each added or changed question not announced before.

    Returns the questions announced now and the problems of the files that do not validate.
    """
    state_path = Path(state) if state else Path(folder) / STATE_FILE
    announced = _load_state(state_path)
    changes, problems = question_changes(folder, registry)
    fresh = [c for c in changes if announced.get(c.question_id) != c.digest]
    for change in fresh:
        name = events.QUESTION_ADDED if change.kind == "added" else events.QUESTION_CHANGED
        events.emit(name, events.question_resource(change.question_id),
                    {**asdict(change), "registry": str(Path(registry).resolve())}, name=change.question_id)
        announced[change.question_id] = change.digest
    if fresh:
        write_text_atomic(json.dumps(announced, indent=1, sort_keys=True), state_path)
    return fresh, problems


@flow(name="scan-questions")
def scan_questions(folder: str, registry: str, state: str | None = None) -> list[dict]:
    """Diff a question folder against the registry and emit added/changed events (the trigger of onboarding)."""
    fresh, problems = announce(folder, registry, state)
    logger = get_run_logger()
    for problem in problems:
        logger.error("skipped: %s", problem)
    for change in fresh:
        logger.info("question %s %s (%s)", change.question_id, change.kind, change.path)
    return [asdict(change) for change in fresh]
