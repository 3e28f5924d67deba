"""bench/bench_engine.py end to end at a tiny size: every baseline computes the engine's P(yes), every
figure the docs quote is in the result file, and the file records the full effective configuration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_engine  # noqa: E402
from engine_fixtures import one_torch_thread  # noqa: E402, F401  (autouse)


def test_tiny_run_all_methods_agree_and_the_file_says_how_it_ran(tmp_path):
    out = tmp_path / "engine.json"
    bench_engine.main(["--records", "6", "--adapters", "1", "2", "--depths", "top2", "--repeats", "1",
                       "--warmup-records", "2", "--matmul-rows", "64", "--methods", *bench_engine.METHODS,
                       "--out", str(out)])
    document = json.loads(out.read_text())
    config = document["config"]
    assert config["batch_tokens"] == 16_384 and config["lora_targets"] == bench_engine.TARGETS
    assert config["cache_batch_tokens"] and config["engine_pooled_only"] is True and document["commit"]
    assert document["results"]["complete"] is True
    cells = document["results"]["cells"]
    assert [(c["adapters"], c["records"]) for c in cells] == [(1, 6), (2, 6)]
    for cell in cells:
        assert set(cell["max_abs_dp"]) == {"engine", *bench_engine.BASELINES}
        assert max(cell["max_abs_dp"].values()) < 1e-5  # the same P(yes), every baseline
        for clock in ("cpu", "wall"):
            figures = cell[clock]
            assert set(figures["rqps"]) == set(bench_engine.METHODS)
            assert figures["vs_strongest"][0] > 0 and figures["strongest_per_repeat"][0] in bench_engine.BASELINES
            assert 0 < figures["mfu"][0] < 1.5 and len(figures["lora_overhead_per_adapter"]) == 1
        assert cell["flops"]["total"] > cell["flops"]["shared_layers"] > 0  # top 2: layers 0-3 shared
    assert out.with_suffix(".md").read_text().count("| top2 |") == 4  # two cells, two clocks
    assert out.with_suffix(".png").stat().st_size > 10_000
