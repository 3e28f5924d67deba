"""The Prefect events Assay emits, and the helpers that emit them.

Deployments in ``flows/prefect.yaml`` are triggered by these names (``triggers: expect: [...]``), so
the names are a contract: change one only together with the triggers that expect it.
"""

from __future__ import annotations

from typing import Any

from prefect.events import Event, emit_event

QUESTION_ADDED = "assay.question.added"
QUESTION_CHANGED = "assay.question.changed"
ADAPTER_PROMOTED = "assay.adapter.promoted"
BATCH_FINISHED = "assay.batch.finished"
BUDGET_EXHAUSTED = "assay.budget.exhausted"
EVENTS = (QUESTION_ADDED, QUESTION_CHANGED, ADAPTER_PROMOTED, BATCH_FINISHED, BUDGET_EXHAUSTED)


def emit(event: str, resource_id: str, payload: dict[str, Any], name: str | None = None) -> Event | None:
    """Emit one Assay event about resource ``resource_id`` (e.g. ``assay.question.is_bad``).

    Returns the event, or None when events are switched off (``PREFECT_EVENTS...``) or there is no API.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown Assay event {event!r}; known: {', '.join(EVENTS)}")
    resource = {"prefect.resource.id": resource_id}
    if name:
        resource["prefect.resource.name"] = name
    return emit_event(event, resource=resource, payload=payload)


def question_resource(question_id: str) -> str:
    """Resource id of a question."""
    return f"assay.question.{question_id}"


def adapter_promoted(question_id: str, version: int, registry: str, reason: str) -> Event | None:
    """Tell consumers and operators that ``question_id`` has a new current adapter."""
    return emit(ADAPTER_PROMOTED, question_resource(question_id),
                {"question_id": question_id, "version": version, "registry": registry, "reason": reason},
                name=question_id)
