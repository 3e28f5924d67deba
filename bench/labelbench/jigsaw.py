"""The bundled Jigsaw votes: the 7 example questions' sources (rules, embedding, recorded GPT-4 answers)
run by `label_questions` on all of train.parquet and dev.parquet, without gold."""

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


def jigsaw_sets(cache: Path) -> list[BenchSet]:
    """One set per (file, question); the votes are computed once into `cache` and reused."""
    questions = load_questions(ROOT / "examples" / "questions" / "jigsaw")
    sets = []
    for name in ("train", "dev"):
        run = cache / f"jigsaw-{name}"
        path = JIGSAW / f"{name}.parquet"
        if not all((run / "votes" / f"{q.spec.id}.parquet").exists() for q in questions):
            label_questions(questions, path, run, sample=None, progress=False)
        for loaded in questions:
            qid = loaded.spec.id
            votes = pq.read_table(run / "votes" / f"{qid}.parquet")
            gold = gold_labels(path, qid)
            lookup = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
            truth = np.array([bool(lookup[i]) for i in votes.column("id").to_pylist()])
            sets.append(BenchSet(f"jigsaw-{name}/{qid}", "jigsaw", votes.replace_schema_metadata(None), truth,
                                 f"examples/data/jigsaw/{name}.parquet, question {qid}"))
    return sets
