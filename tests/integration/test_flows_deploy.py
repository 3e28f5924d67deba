"""flows/prefect.yaml deployed for real with the Prefect CLI against the session's Prefect API, and the
event-driven path checked end to end: an ``assay.question.added`` event makes Prefect's automation
schedule an ``onboard-question`` run for that question file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL

from assay.flows import events

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def prefect_cli(*args: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_prefect_yaml_deploys_and_a_question_event_triggers_onboarding(prefect_api):
    prefect_cli("work-pool", "create", "assay-gpu", "--type", "process", "--overwrite")
    prefect_cli("--no-prompt", "deploy", "--prefect-file", "flows/prefect.yaml", "--all")
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        automations = client.read_automations()
    assert {"monthly-batch", "onboard-question", "scan-questions", "stream-consumer", "label", "train",
            "evaluate-and-promote"} <= set(deployments)
    assert deployments["monthly-batch"].schedules[0].schedule.cron == "0 2 1 * *"
    assert all(d.work_pool_name == "assay-gpu" for d in deployments.values())
    onboard = deployments["onboard-question"]
    assert any(a.trigger.expect == {events.QUESTION_ADDED, events.QUESTION_CHANGED} for a in automations)

    path = "/etc/assay/questions/is_complaint.yaml"
    events.emit(events.QUESTION_ADDED, events.question_resource("is_complaint"),
                {"question_id": "is_complaint", "path": path, "kind": "added", "spec_version": 1, "digest": "x"})
    EventsWorker.drain_all()
    deadline, runs = time.time() + 90, []
    while not runs and time.time() < deadline:
        time.sleep(1)
        with get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs() if r.deployment_id == onboard.id]
    assert runs, "the automation did not schedule an onboard-question run within 90 s"
    assert runs[0].parameters["question_file"] == path
    assert runs[0].parameters["run_dir"] == "/var/lib/assay/onboarding"  # the deployment's own parameters stay
