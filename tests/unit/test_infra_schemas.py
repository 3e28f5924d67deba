"""The deployment files against their tools' own schemas, offline: the Kubernetes OpenAPI schemas
(kubernetes-validate), the Compose specification (check-jsonschema's vendored copy), `systemd-analyze
verify` in a scratch root, and Prefect's own model of prefect.yaml. Each checker is also fed a broken copy
of the real file and must reject it, so none of them can pass by checking nothing."""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
K8S = INFRA / "k8s"
SYSTEMD = INFRA / "systemd"
PREFECT_YAML = ROOT / "flows" / "prefect.yaml"
SETTINGS_FILE = INFRA / "config" / "assay.yaml"  # Assay's own format: loaded by test_infra.py
INSTALL_BIN = Path("/opt/assay/.venv/bin")  # where the units expect the venv (infra/docker/Dockerfile, README)
HOST_UNITS = Path("/usr/lib/systemd/system")  # sysinit.target & co., which every unit depends on by default
# The manifests name no minimum Kubernetes version: check the oldest and the newest that the validator ships.
K8S_VERSIONS = ("1.25", "latest")


# ---- checkers: each returns the problems it found ("" / [] when the input is valid) ----------------
def k8s_problems(docs: list[dict]) -> list[str]:
    """Every manifest against the strict Kubernetes schemas (unknown fields are errors)."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        for version in K8S_VERSIONS:
            wanted = kubernetes_validate.latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(doc, wanted, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                problems.append(f"{doc['kind']}/{doc['metadata']['name']} (k8s {wanted}) at {where}: {error.message}")
    return problems


def compose_problems(path: Path) -> str:
    """check-jsonschema's report of `path` against its vendored Compose specification (no network)."""
    from check_jsonschema import main
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--builtin-schema", "vendor.compose-spec", "--output-format", "text",
                                       str(path)])
    assert result.exit_code in (0, 1), result.output  # 2+: the tool itself failed (bad schema name, no file)
    return result.output if result.exit_code else ""


def systemd_problems(units: list[Path], root: Path) -> str:
    """`systemd-analyze verify` on `units` inside a scratch root holding only what Assay installs.

    The root gets the host's stock units (sysinit.target & co.) and, in /opt/assay/.venv/bin, one
    executable per console script that the assay and prefect distributions declare: an ExecStart naming
    any other program fails. verify only warns (exit 0) about unknown keys and bad values, so any output
    counts as a problem.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: `apt-get install systemd` (it is only used, never started)")
    system = root / "etc" / "systemd" / "system"
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    (root / INSTALL_BIN.relative_to("/")).mkdir(parents=True)
    for script in entry_points(group="console_scripts"):
        if script.dist and script.dist.name in ("assay", "prefect"):
            program = root / INSTALL_BIN.relative_to("/") / script.name
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    system.mkdir(parents=True, exist_ok=True)
    for unit in units:
        shutil.copy(unit, system / unit.name)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={root}",
                             *(str(system / unit.name) for unit in units)],
                            capture_output=True, text=True, timeout=60, check=False)
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}" if (
        result.returncode or result.stdout or result.stderr) else ""


def prefect_problems(raw: dict) -> list[str]:
    """prefect.yaml against Prefect's own model of it, plus the keys that model would silently ignore."""
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel, WorkPoolConfig
    from pydantic import ValidationError

    try:
        PrefectYamlModel.model_validate(raw)
    except ValidationError as error:
        return [str(error)]

    def ignored(section: dict, model: type, where: str, allowed: frozenset = frozenset()) -> list[str]:
        known = {info.alias or name for name, info in model.model_fields.items()} | allowed
        return [f"{where}: `{key}` is not a field of {model.__name__} (Prefect ignores it)"
                for key in sorted(set(section) - known)]

    # `definitions` is where prefect.yaml keeps its YAML anchors (Prefect's docs); the model ignores it.
    problems = ignored(raw, PrefectYamlModel, "prefect.yaml", frozenset({"definitions"}))
    for deployment in raw.get("deployments", []):
        problems += ignored(deployment, DeploymentConfig, deployment.get("name", "?"))
        problems += ignored(deployment.get("work_pool") or {}, WorkPoolConfig, f"{deployment.get('name')}.work_pool")
    return problems


def k8s_docs(text: str) -> list[dict]:
    """The Kubernetes API objects of one manifest file (the Kustomization is kustomize's, not an API object)."""
    return [doc for doc in yaml.safe_load_all(text) if doc and doc["kind"] != "Kustomization"]


# ---- the real files -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_k8s_manifests_match_the_kubernetes_schemas(path):
    assert k8s_problems(k8s_docs(path.read_text())) == []


def test_kustomization_applies_every_manifest_in_the_namespace_it_creates():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests), "a manifest `kubectl apply -k` would skip"
    namespaces = [d for d in k8s_docs((K8S / "namespace.yaml").read_text()) if d["kind"] == "Namespace"]
    assert [d["metadata"]["name"] for d in namespaces] == [kustomization["namespace"]]


def test_compose_file_matches_the_compose_spec():
    assert compose_problems(COMPOSE) == ""


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    units = sorted(SYSTEMD.iterdir())
    assert len(units) >= 5
    assert systemd_problems(units, tmp_path) == ""


def test_prefect_yaml_matches_prefects_model():
    assert prefect_problems(yaml.safe_load(PREFECT_YAML.read_text())) == []


def test_every_yaml_file_is_checked_by_a_schema():
    """A new YAML file under infra/ must get a checker here (infra/kafka holds the test broker's own files)."""
    checked = {COMPOSE, SETTINGS_FILE, PREFECT_YAML, *K8S.glob("*.yaml")}
    found = {p for p in INFRA.rglob("*.y*ml") if p.relative_to(INFRA).parts[0] != "kafka"} | {PREFECT_YAML}
    assert found == checked, f"unchecked: {sorted(map(str, found - checked))}"


# ---- broken copies: the same checkers must reject them -------------------------------------------
def test_a_broken_k8s_manifest_is_rejected():
    text = (K8S / "worker.yaml").read_text()
    assert "volumeMounts:" in text and "replicas: 1" in text
    problems = k8s_problems(k8s_docs(text.replace("volumeMounts:", "volumeMount:", 1)))
    assert any("'volumeMount' was unexpected" in p for p in problems), problems
    problems = k8s_problems(k8s_docs(text.replace("replicas: 1", "replicas: one", 1)))
    assert any("spec.replicas" in p and "'one' is not of type 'integer'" in p for p in problems), problems


def test_a_broken_compose_file_is_rejected(tmp_path):
    text = COMPOSE.read_text()
    for good, bad, expected in [("restart: unless-stopped", "restart: [unless-stopped]", "is not of type 'string'"),
                                ("env_file:", "envfile:", "'envfile' was unexpected"),
                                ("    image: apache/kafka", "    image: [apache/kafka", "")]:
        assert good in text, good
        broken = tmp_path / "docker-compose.yml"
        broken.write_text(text.replace(good, bad, 1))
        problems = compose_problems(broken)
        assert problems and expected in problems, (bad, problems)


@pytest.mark.parametrize("good, bad, expected", [
    ("Restart=always", "Restart=sometimes", "Failed to parse service restart specifier"),
    ("RestartSec=5", "RestartSecs=5", "Unknown key 'RestartSecs'"),
    ("/opt/assay/.venv/bin/assay", "/opt/assay/.venv/bin/asay", "is not executable"),
    ("[Service]", "[Servce]", "Unknown section 'Servce'"),
])
def test_a_broken_systemd_unit_is_rejected(tmp_path, good, bad, expected):
    unit = SYSTEMD / "assay-consumer@.service"
    assert good in unit.read_text()
    broken = tmp_path / "units" / unit.name
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace(good, bad, 1))
    assert expected in systemd_problems([broken], tmp_path / "root")


def test_a_broken_timer_is_rejected(tmp_path):
    timer = SYSTEMD / "assay-monthly.timer"
    broken = tmp_path / "units" / timer.name
    broken.parent.mkdir()
    broken.write_text(timer.read_text().replace("OnCalendar=*-*-01 02:00:00", "OnCalendar=monthly at two", 1))
    shutil.copy(SYSTEMD / "assay-monthly.service", broken.parent)
    assert "Failed to parse calendar specification" in systemd_problems(
        [broken, broken.parent / "assay-monthly.service"], tmp_path / "root")


def test_a_broken_prefect_yaml_is_rejected():
    def broken(edit) -> dict:
        raw = yaml.safe_load(PREFECT_YAML.read_text())
        edit(raw["deployments"][0])
        return raw

    problems = prefect_problems(broken(lambda d: d["schedules"][0].update(interval=60)))
    assert any("Exactly one of 'cron', 'interval', or 'rrule'" in p for p in problems), problems
    problems = prefect_problems(broken(lambda d: d.update(parameter=d.pop("parameters"))))
    assert problems == ["monthly-batch: `parameter` is not a field of DeploymentConfig (Prefect ignores it)"]
    # work_pool is a YAML alias shared by every deployment: give this one its own copy
    problems = prefect_problems(broken(lambda d: d.update(work_pool={**d["work_pool"], "queue": "default"})))
    assert problems == ["monthly-batch.work_pool: `queue` is not a field of WorkPoolConfig (Prefect ignores it)"]
    problems = prefect_problems(broken(lambda d: d.update(tags=7)))
    assert problems and "tags" in problems[0], problems
