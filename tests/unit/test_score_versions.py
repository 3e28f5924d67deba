"""score_versions keys its answer by (question id, version): two versions with the same key must not share a call."""

from pathlib import Path

import pytest

from assay.distill.evaluate import score_versions
from assay.schemas.registry import AdapterVersion


def test_a_student_and_an_oracle_of_the_same_version_are_refused_not_overwritten(tmp_path: Path) -> None:
    student = AdapterVersion("insult", 1, tmp_path / "registry-student" / "insult" / "1", {"threshold": 0.3})
    oracle = AdapterVersion("insult", 1, tmp_path / "registry-oracle" / "insult" / "1", {"threshold": 0.6})
    with pytest.raises(ValueError, match=r"insult@1 given more than once .* its own call"):
        score_versions([student, oracle], ["a text"])
