"""The bundled Jigsaw votes: the 7 example questions' sources (rules, embedding, recorded GPT-4 answers)
run by `label_questions` on all of train.parquet and dev.parquet, without gold.

The votes are committed in `jigsaw_votes/` (made at commit 0114ebc, ~18 min of MiniLM on 2 busy cores), so
the suite runs in minutes; `rebuild=True` (`label_suite.py --rebuild-jigsaw`) recomputes them into the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from assay.labeling.gold import gold_labels
from assay.labeling.pipeline import label_questions
from assay.schemas import load_questions

from .data import BenchSet

ROOT = Path(__file__).resolve().parents[2]
JIGSAW = ROOT / "examples" / "data" / "jigsaw"
COMMITTED = Path(__file__).resolve().parent / "jigsaw_votes"


def jigsaw_sets(cache: Path, rebuild: bool = False) -> list[BenchSet]:
    """One set per (file, question): the committed votes, or (`rebuild`) votes computed once into `cache`."""
    questions = load_questions(ROOT / "examples" / "questions" / "jigsaw")
    sets = []
    for name in ("train", "dev"):
        folder = COMMITTED / name
        if rebuild:
            run = cache / f"jigsaw-{name}"
            folder = run / "votes"
            if not all((folder / f"{q.spec.id}.parquet").exists() for q in questions):
                label_questions(questions, JIGSAW / f"{name}.parquet", run, sample=None, progress=False)
        path = JIGSAW / f"{name}.parquet"
        for loaded in questions:
            qid = loaded.spec.id
            votes = pq.read_table(folder / f"{qid}.parquet")
            gold = gold_labels(path, qid)
            lookup = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
            truth = np.array([bool(lookup[i]) for i in votes.column("id").to_pylist()])
            sets.append(BenchSet(f"jigsaw-{name}/{qid}", "jigsaw", votes.replace_schema_metadata(None), truth,
                                 f"examples/data/jigsaw/{name}.parquet, question {qid}"))
    return sets
