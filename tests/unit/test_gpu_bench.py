"""bench/gpu (issue 15): a check records failing and over-budget cases and keeps going; the summary
names what did not run, what failed, and the goals it could not judge. (The checks themselves run in
``bench/gpu/run.sh --tiny``; these are the parts that decide what the GPU run reports.)"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "gpu"))

import common  # noqa: E402
import summarize  # noqa: E402


def make_check(tmp_path: Path, budget: float = 60.0) -> common.Check:
    args = argparse.Namespace(out=tmp_path, budget=budget, tiny=True, device="cpu")
    return common.Check("kernels", args)


def test_case_errors_and_budget_are_recorded_and_the_check_goes_on(tmp_path):
    check = make_check(tmp_path)
    assert check.case("fine", lambda: {"pass": True, "x": 1}) == {"pass": True, "x": 1}
    assert check.case("raises", lambda: 1 / 0) is None
    check.case("misses its bound", lambda: {"pass": False})
    assert check.case("too long", lambda: {"pass": True}, needs_s=10_000) is None
    partial = json.loads((tmp_path / "kernels.json").read_text())["results"]  # written after every case
    assert partial["complete"] is False and partial["n_cases"] == 3
    check.finish({"setting": 3})
    doc = json.loads((tmp_path / "kernels.json").read_text())
    results = doc["results"]
    assert results["complete"] is True and doc["config"]["setting"] == 3 and doc["config"]["budget"] == 60.0
    assert results["failed"] == ["raises", "misses its bound"] and results["skipped"] == ["too long"]
    raised = results["cases"][1]
    assert raised["ok"] is False and raised["error"].startswith("ZeroDivisionError") and "traceback" in raised


def test_time_ms_counts_every_call():
    calls = []
    timing = common.time_ms(lambda: calls.append(1), "cpu", warmup=2, iters=5)
    assert len(calls) == 7 and timing["iters"] == 5 and 0 <= timing["min_ms"] <= timing["median_ms"]


def test_summary_of_an_empty_folder_says_nothing_ran(tmp_path):
    summarize.main([str(tmp_path), "--status", "kernels=124 parity=skipped"])
    text = (tmp_path / "summary.md").read_text()
    assert "| kernels | **killed at its time limit** |" in text
    assert "| parity | **skipped: total budget spent** |" in text
    assert "| engine | **exit not run** |" in text
    assert "| kernels within tolerance everywhere | 0/0 cases | **no** |" in text


def test_summary_names_failed_cases_and_unmet_goals(tmp_path):
    check = make_check(tmp_path)
    check.case("bf16 hidden 4096: broken", lambda: 1 / 0)
    check.finish({})
    engine = common.Check("engine", argparse.Namespace(out=tmp_path, budget=60.0, tiny=True, device="cpu"))
    engine.case("engine, 8 full-depth adapters", lambda: {
        "lora_overhead": 0.12, "mfu": 0.4, "goal_overhead_le_5pct": False, "goal_mfu_ge_60pct": False})
    engine.finish({})
    summarize.main([str(tmp_path), "--status", "kernels=0 engine=0"])
    text = (tmp_path / "summary.md").read_text()
    assert "- kernels / bf16 hidden 4096: broken: `ZeroDivisionError" in text
    assert "| LoRA overhead <= 5 % at 8 adapters | +12.0% | **no** |" in text
    assert "| MFU >= 60 % (8 adapters, vs measured peak) | 40.0% | **no** |" in text


@pytest.mark.parametrize("value, expected", [(None, "—"), (True, "yes"), (False, "**no**"), (0.5, "0.5")])
def test_fmt(value, expected):
    assert summarize.fmt(value) == expected
