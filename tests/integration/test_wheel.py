"""The wheel a user installs: built from a copy of the sources (so the checkout gets no build/ folder), it
holds every module of every stage under `assay.`, the package data, and the `assay` console script."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Build the wheel with the installed setuptools (pip wheel, no network, no build isolation)."""
    source = tmp_path_factory.mktemp("source")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("pyproject.toml", config["project"]["readme"]):
        shutil.copy(ROOT / name, source / name)
    for folder in config["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("assay-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_wheel_holds_every_listed_package_and_every_module(wheel):
    names = set(wheel.namelist())
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setuptools["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is not in the wheel"
    for dotted, folder in setuptools["package-dir"].items():
        for module in (ROOT / folder).rglob("*.py"):
            inside = "/".join((*dotted.split("."), *module.relative_to(ROOT / folder).parts))
            assert inside in names, f"{module.relative_to(ROOT)} is not in the wheel (as {inside})"


def source_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The source folder of `package` (assay.labeling.model -> labeling/model) per [tool.setuptools.package-dir]."""
    stage = ".".join(package.split(".")[:2])
    return ROOT / package_dir[stage] / Path(*package.split(".")[2:])


def test_wheel_holds_the_package_data(wheel):
    names = set(wheel.namelist())
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "assay/schemas/question.schema.json" in names
    for package, patterns in setuptools["package-data"].items():
        folder = source_folder(package, setuptools["package-dir"])
        for pattern in patterns:
            files = list(folder.glob(pattern))
            assert files, f"package-data {package}: {pattern} matches no file"
            for file in files:
                inside = "/".join((*package.split("."), *file.relative_to(folder).parts))
                assert inside in names, f"{file.relative_to(ROOT)} is not shipped (as {inside})"
    shipped = wheel.read("assay/schemas/question.schema.json")
    assert shipped == (ROOT / "schemas" / "question.schema.json").read_bytes()


def test_wheel_declares_the_assay_console_script(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert parser["console_scripts"]["assay"] == "assay.flows.cli:main"
