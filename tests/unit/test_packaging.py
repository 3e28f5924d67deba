"""Packaging: every Python folder installs under the `assay` namespace, and one CLI lists every stage."""

import importlib
import re
import tomllib
from pathlib import Path

import typer
from typer.testing import CliRunner

from assay.flows.cli import app

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("schemas", "labeling", "distill", "engine", "kernels", "flows")


def test_every_python_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for stage in STAGES:
        assert config["package-dir"][f"assay.{stage}"] == stage
    for stage in sorted(set(config["package-dir"].values())):  # the stages and any other shipped folder
        folders = {source.parent for source in (ROOT / stage).rglob("*.py")}
        for folder in sorted(folders):
            assert (folder / "__init__.py").is_file(), f"{folder} has modules but no __init__.py: it would not ship"
            dotted = ".".join(("assay",) + folder.relative_to(ROOT).parts)
            assert dotted in listed, f"{dotted} is missing from [tool.setuptools] packages in pyproject.toml"


def test_no_bare_top_level_imports():
    for stage in STAGES:
        for source in (ROOT / stage).rglob("*.py"):
            for line in source.read_text().splitlines():
                stripped = line.strip()
                for name in STAGES:
                    assert not stripped.startswith((f"import {name}", f"from {name} ")), (
                        f"{source}: `{stripped}` — import through the namespace: assay.{name}")


# Written out by hand, not read from the app: a command that disappears (a module left out of
# COMMAND_MODULES, a register() that forgets one) fails here.
TOP_LEVEL = {"demo", "label", "combine", "onboard", "monthly", "watch-questions", "score", "consume", "produce",
             "train", "questions", "teachers", "registry"}
GROUPS = {"questions": {"validate", "list", "schema"}, "teachers": {"check"},
          "registry": {"list", "show", "promote", "rollback"}}


def listed_commands(help_text: str) -> set[str]:
    """The names in the Commands panel of a rich `--help` screen (continuation lines start with spaces)."""
    panel = help_text.split("─ Commands ─", 1)[1]
    return set(re.findall(r"^│ (\S+)\s", panel, re.M))


def command_paths(command, path=()) -> list[tuple[str, ...]]:
    """Every command and command group below `command`, as the words that reach it."""
    found = [path] if path else []
    for name, sub in getattr(command, "commands", {}).items():
        found += command_paths(sub, (*path, name))
    return found


def test_help_lists_every_command_and_group():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert listed_commands(result.output) == TOP_LEVEL
    for group, subcommands in GROUPS.items():
        result = CliRunner().invoke(app, [group, "--help"])
        assert result.exit_code == 0, result.output
        assert listed_commands(result.output) == subcommands, group


def test_every_command_module_contributes_a_command():
    from assay.flows.cli import COMMAND_MODULES

    seen: set[str] = set()
    for name in COMMAND_MODULES:
        alone = typer.Typer()
        importlib.import_module(name).register(alone)
        added = {c.name for c in alone.registered_commands} | {g.name for g in alone.registered_groups}
        assert added and None not in added, f"{name}.register(app) adds no named command"
        assert not added & seen, f"{name} registers {added & seen} again"
        seen |= added
    assert seen == TOP_LEVEL


def test_every_command_and_subcommand_has_working_help():
    paths = command_paths(typer.main.get_command(app))
    assert len(paths) == len(TOP_LEVEL) + sum(map(len, GROUPS.values()))
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], prog_name="assay")
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert f"Usage: assay {' '.join(path)} " in result.output, (path, result.output)
