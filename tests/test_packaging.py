"""Packaging: every Python folder installs under the `assay` namespace, and one CLI lists every stage."""

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from assay.flows.cli import app

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("schemas", "labeling", "distill", "engine", "kernels", "flows")


def test_every_python_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for stage in STAGES:
        assert config["package-dir"][f"assay.{stage}"] == stage
        for init in (ROOT / stage).rglob("__init__.py"):
            dotted = ".".join(("assay",) + init.parent.relative_to(ROOT).parts)
            assert dotted in listed, f"{dotted} is missing from [tool.setuptools] packages in pyproject.toml"


def test_no_bare_top_level_imports():
    for stage in STAGES:
        for source in (ROOT / stage).rglob("*.py"):
            for line in source.read_text().splitlines():
                stripped = line.strip()
                for name in STAGES:
                    assert not stripped.startswith((f"import {name}", f"from {name} ")), (
                        f"{source}: `{stripped}` — import through the namespace: assay.{name}")


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("questions", "demo"):
        assert command in result.output
