"""The deployment files, checked without Docker or a cluster, for what their schemas (test_infra_schemas.py)
cannot see: every command they run exists (with the options it passes); every environment variable they set
is one something reads; the ports, paths and pool names they share agree; and flows/prefect.yaml deploys
what the flows accept."""

from __future__ import annotations

import configparser
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
PREFECT_YAML = ROOT / "flows" / "prefect.yaml"
K8S = INFRA / "k8s"
SYSTEMD = INFRA / "systemd"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
ENV_FILE = INFRA / "config" / "assay.env"
SETTINGS_FILE = INFRA / "config" / "assay.yaml"
DATA = "/var/lib/assay"
POOL = "assay-gpu"
# Read by the libraries Assay runs on (Hugging Face hub/transformers/tokenizers, CUDA, Python, pip).
THIRD_PARTY_ENV = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES",
                   "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
IMAGE_ENV_PREFIX = {"kafka": "KAFKA_", "postgres": "POSTGRES_"}  # the official images' own settings


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_containers() -> list[dict]:
    deployments = [doc for doc in k8s_docs() if doc["kind"] == "Deployment"]
    return [c for doc in deployments for c in doc["spec"]["template"]["spec"]["containers"]]


def units() -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for path in sorted(SYSTEMD.iterdir()):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # systemd keys are case-sensitive
        parser.read_string(path.read_text(), source=str(path))
        parsed[path.name] = parser
    return parsed


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the infra files run."""
    found = []
    for name, service in compose()["services"].items():
        if "command" in service:
            command = service["command"]
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            if argv[:2] == ["sh", "-c"]:
                found += [(f"compose {name}", shlex.split(part)) for part in argv[2].split("&&")]
            else:
                found.append((f"compose {name}", argv))
    found += [(f"k8s {c['name']}", [str(a) for a in c["command"]]) for c in k8s_containers()]
    for name, unit in units().items():
        if unit.has_option("Service", "ExecStart"):
            argv = shlex.split(unit["Service"]["ExecStart"])
            found.append((f"systemd {name}", [Path(argv[0]).name, *argv[1:]]))
    cmd = re.search(r"^CMD (.+)$", DOCKERFILE.read_text(), re.M)
    found.append(("Dockerfile CMD", yaml.safe_load(cmd.group(1))))
    return found


def check_assay_command(argv: list[str]) -> None:
    import typer

    from assay.flows.cli import app

    command = typer.main.get_command(app)  # typer's own click-like classes: duck-typed below
    words = argv[1:]
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        assert words[0] in command.commands, f"`assay {words[0]}` does not exist (have: {sorted(command.commands)})"
        command, words = command.commands[words[0]], words[1:]
    options = {opt: param for param in command.params for opt in param.opts if opt.startswith("-")}
    passed = [w.split("=")[0] for w in words if w.startswith("--")]
    unknown = [w for w in passed if w not in options and w != "--help"]
    assert not unknown, f"{' '.join(argv[:3])}: unknown option(s) {unknown}"
    missing = [p.opts[0] for p in command.params if p.required and p.opts[0].startswith("--")
               and not set(p.opts) & set(passed)]
    assert not missing, f"{' '.join(argv[:3])}: required option(s) not given: {missing}"


def check_prefect_command(argv: list[str]) -> None:
    from prefect.cli._app import _app

    words = [w for w in argv[1:] if w not in ("--no-prompt", "--prompt")]  # session flags of the root app
    _app.parse_args(words, exit_on_error=False, print_error=False)


def test_every_command_exists_with_the_options_it_passes():
    seen = commands()
    programs = {argv[0] for _, argv in seen}
    assert programs <= {"assay", "prefect"}, programs
    assert any(argv[:2] == ["assay", "watch-questions"] for _, argv in seen)
    for where, argv in seen:
        try:
            (check_assay_command if argv[0] == "assay" else check_prefect_command)(argv)
        except Exception as error:  # name the file that runs the bad command
            raise AssertionError(f"{where}: {' '.join(argv)}: {error}") from None


def test_a_bad_command_is_caught():
    with pytest.raises(AssertionError, match="does not exist"):
        check_assay_command(["assay", "watch-question", "x"])
    with pytest.raises(AssertionError, match="unknown option"):
        check_assay_command(["assay", "monthly", "--registry", "r", "--out", "o", "--inputs", "x"])
    from cyclopts.exceptions import UnknownOptionError  # the parser of Prefect's own CLI

    with pytest.raises(UnknownOptionError, match="--poll"):
        check_prefect_command(["prefect", "worker", "start", "--poll", POOL])


def assay_read_env() -> set[str]:
    """Environment variable names Assay's own code reads (string literals in its source)."""
    names = set()
    for folder in ("schemas", "labeling", "distill", "engine", "kernels", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"']([A-Z][A-Z0-9_]*_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_env_var_set_is_read_by_something():
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    known = assay_read_env() | THIRD_PARTY_ENV | set(_get_valid_setting_names(Settings))
    assert "ASSAY_CONFIG" in known
    sets: list[tuple[str, str]] = [("assay.env", k) for k in env_file(ENV_FILE)]
    sets += [("Dockerfile", k) for k in re.findall(r"^\s+([A-Z][A-Z0-9_]+)=", DOCKERFILE.read_text(), re.M)]
    for name, service in compose()["services"].items():
        prefix = IMAGE_ENV_PREFIX.get(name)
        for key in service.get("environment", {}):
            if not (prefix and key.startswith(prefix)):
                sets.append((f"compose {name}", key))
    sets += [(f"k8s {c['name']}", e["name"]) for c in k8s_containers() for e in c.get("env", [])]
    for unit_name, unit in units().items():
        if unit.has_section("Service"):
            sets += [(unit_name, pair.split("=")[0]) for pair in unit["Service"].get("Environment", "").split()]
    unknown = [(where, key) for where, key in sets if key not in known]
    assert not unknown, f"set but read by nothing (typo?): {unknown}"
    assert len(sets) > 15


def test_compose_services_agree_on_ports_image_and_pool():
    services = compose()["services"]
    server = services["prefect-server"]
    port = server["command"].split("--port")[1].split()[0]
    assert f"{port}:{port}" in server["ports"]
    kafka = services["kafka"]["environment"]
    advertised = {url.split("://")[1] for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in services.items():
        if service.get("image") == "assay:0.1.0":
            assert service["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{port}/api", name
            assert f"{DATA}" in " ".join(service["volumes"]), name
            build = service["build"]
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        command = service.get("command", "")
        if "--bootstrap" in command:
            assert command.split("--bootstrap")[1].split()[0] in advertised, name
        if "worker start" in command:
            assert f"--pool {POOL}" in command
    for volume in services["worker"]["volumes"]:
        host = volume.split(":")[0]
        if host.startswith("."):
            assert (COMPOSE.parent / host).exists(), volume
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    deployed = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    bootstraps = {d["parameters"]["bootstrap"] for d in deployed if "bootstrap" in d["parameters"]}
    assert bootstraps <= advertised


def test_dockerfile_copies_what_exists_and_works_where_the_deployments_pull():
    text = DOCKERFILE.read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.M).group(1)
    pull = yaml.safe_load(PREFECT_YAML.read_text())["pull"][0]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir
    for unit in units().values():
        if unit.has_section("Service"):
            assert unit["Service"]["WorkingDirectory"] == workdir


def test_k8s_manifests_are_consistent():
    docs = k8s_docs()
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (deployment["metadata"]["name"], mount["name"])
            for env in container.get("env", []):
                if env["name"] == "PREFECT_API_URL":
                    host, port = re.match(r"http://([^:/]+):(\d+)/api", env["value"]).groups()
                    assert services[host]["spec"]["ports"][0]["port"] == int(port)
            if container["image"].startswith("assay:"):
                assert any(m["mountPath"] == DATA for m in container["volumeMounts"])
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    server = next(c for c in k8s_containers() if c["name"] == "prefect-server")
    assert server["ports"][0]["containerPort"] == services["prefect-server"]["spec"]["ports"][0]["targetPort"]
    gpu = {c["name"] for c in k8s_containers() if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})}
    assert gpu == {"assay-worker", "assay-consumer"}


def test_systemd_units():
    parsed = units()
    assert {"assay-worker.service", "assay-consumer@.service", "assay-watch-questions.service",
            "assay-monthly.service", "assay-monthly.timer"} <= set(parsed)
    for name, unit in parsed.items():
        assert unit.has_section("Unit"), name
        if name.endswith(".timer"):
            assert (SYSTEMD / unit["Timer"]["Unit"]).is_file()
            assert unit["Timer"]["OnCalendar"]
            continue
        service = unit["Service"]
        assert service["ExecStart"].startswith("/opt/assay/.venv/bin/"), name
        assert service["EnvironmentFile"].lstrip("-").startswith("/etc/assay/"), name
        assert service["User"] == "assay"
    assert "%i" in parsed["assay-consumer@.service"]["Service"]["Environment"]


def test_example_settings_load_and_keep_data_on_prem():
    from assay.labeling.teacher.settings import load_settings

    settings = load_settings(SETTINGS_FILE)
    assert settings.residency == "on-prem" and settings.mask_pii and settings.audit
    assert str(settings.audit_log).startswith(DATA) and str(settings.cache_dir).startswith(DATA)
    assert env_file(ENV_FILE)["ASSAY_CONFIG"] == "/etc/assay/assay.yaml"


# ---- flows/prefect.yaml ------------------------------------------------------------------------
def deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["name"])
def test_deployment_matches_its_flow(deployment):
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.flows import Flow, load_flow_from_entrypoint

    from assay.flows.events import EVENTS

    path, function = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file()
    flow = load_flow_from_entrypoint(f"{ROOT / path}:{function}")
    assert isinstance(flow, Flow)
    signature = inspect.signature(flow.fn)
    given = set(deployment.get("parameters", {}))
    triggers = _initialize_deployment_triggers(deployment["name"], [dict(t) for t in deployment.get("triggers", [])])
    for trigger in triggers:
        assert set(trigger.expect) <= set(EVENTS)
        given |= set(trigger.parameters or {})
    assert given <= set(signature.parameters), f"not parameters of {function}: {given - set(signature.parameters)}"
    required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= given, f"{deployment['name']}: required parameters not set: {required - given}"
    for schedule in deployment.get("schedules", []):
        _schedule_config_to_deployment_schedule(schedule)
    assert deployment["work_pool"]["name"] == POOL
    for key, value in deployment.get("parameters", {}).items():
        if isinstance(value, str) and value.startswith("/var/"):
            assert value.startswith(DATA), (key, value)


def test_trigger_templates_name_fields_the_events_carry():
    from dataclasses import fields

    from assay.flows.watch import QuestionChange

    onboard = next(d for d in deployments() if d["name"] == "onboard-question")
    carried = {f.name for f in fields(QuestionChange)}
    for template in onboard["triggers"][0]["parameters"].values():
        field = re.fullmatch(r"\{\{ event\.payload\.(\w+) \}\}", template).group(1)
        assert field in carried
    monthly = next(d for d in deployments() if d["name"] == "monthly-batch")
    assert monthly["schedules"][0]["cron"] == "0 2 1 * *"
