"""The bundled Jigsaw questions state the yes rate a data team would read, and nothing more.

Each `expected_yes_rate` in examples/questions/jigsaw/ is the yes share of 200 records of the demo's seed
(the 4,000 records `assay label` samples from train.parquet), drawn as `bench/stats.py read_rate_among` draws
them: what a team writes after reading a sample, the procedure `students_vs_baselines.py --read 200`
measured. This test recomputes them from the gold labels, so a changed seed or file cannot leave the
bundled rates silently made from something else.
"""

from __future__ import annotations

import sys
from pathlib import Path

from assay.labeling.gold import gold_labels
from assay.labeling.seed import sample_records
from assay.schemas import load_questions

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from stats import read_rate_among  # noqa: E402

TRAIN = ROOT / "examples" / "data" / "jigsaw" / "train.parquet"
SEED_RECORDS, READ = 4000, 200  # the demo's seed size (`assay label` default) and the records a team reads


def test_every_bundled_rate_is_the_yes_share_of_200_read_seed_records() -> None:
    seed, _ = sample_records(TRAIN, SEED_RECORDS, 0)
    in_seed = set(seed.column("id").cast("string").to_pylist())
    assert len(in_seed) == SEED_RECORDS
    for loaded in load_questions(ROOT / "examples" / "questions" / "jigsaw"):
        rate = read_rate_among(gold_labels(TRAIN, loaded.spec.id), in_seed, READ)
        assert loaded.spec.expected_yes_rate == rate, loaded.spec.id
