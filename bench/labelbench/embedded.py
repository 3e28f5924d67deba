"""Sets whose sources include the embedding source, as `assay label` itself votes it.

A question file is what a data team writes: the wording, three yes and three no examples (drawn once with a fixed
seed from the records, by their truth), the frozen rules and `{kind: embedding}` (nearest of the examples, the
default base's embeddings). `embedded_sets` labels every record with `label_questions` (no gold, no sample) and
keeps each question's votes; the suite then scores its methods on them, as on any other set.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from stats import read_rate

from .corpora import FOLDOC_DEB, HERE, WORDNET_DEB, WORDNET_PARTS, fetch_wordnet, foldoc_questions, read_wordnet
from .data import BenchSet

EXAMPLES = 3  # yes and no examples per question
EXAMPLE_LENGTH = (20, 300)  # characters: examples a team would paste into a question file


def write_question(folder: Path, qid: str, family: dict, pool: pa.Table, read: int | None = None) -> Path:
    """The question file of `family` (its `question` and rules `sources`) with 3 + 3 examples from `pool` (id,
    text, label), the embedding source, and (`read`) the yes rate seen reading that many records as
    `expected_yes_rate`."""
    rng = random.Random(1)
    labels, texts = pool.column("label").to_pylist(), pool.column("text").to_pylist()
    examples = []
    for answer in (True, False):
        candidates = [t for t, y in zip(texts, labels) if bool(y) == answer and
                      EXAMPLE_LENGTH[0] <= len(t) <= EXAMPLE_LENGTH[1]]
        examples += [{"text": t, "answer": answer} for t in rng.sample(candidates, EXAMPLES)]
    spec = {"id": qid, "version": 1, "question": family["question"], "examples": examples,
            "sources": [{"kind": "rules", **rules} for rules in family["sources"]] + [{"kind": "embedding"}]}
    if read:
        spec["expected_yes_rate"] = round(read_rate(pool.column("label").to_numpy(), read), 4)
    path = folder / f"{qid}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def embedded_sets(ids: list[str], texts: list[str], questions: list[tuple[str, dict, np.ndarray]], work: Path,
                  part: str, note: str) -> list[BenchSet]:
    """One set per question (name, spec with `question` and `sources`, truth over `ids`): the votes of its rules
    and its embedding source on every record, from `label_questions` run in `work` (votes reused when alike)."""
    from assay.labeling.pipeline import label_questions
    from assay.schemas.loader import load_questions

    (work / "questions").mkdir(parents=True, exist_ok=True)
    records = pa.table({"id": ids, "text": texts})
    pq.write_table(records, work / "records.parquet")
    for name, spec, truth in questions:
        write_question(work / "questions", name, spec, records.append_column("label", pa.array(truth.astype(np.int8))))
    label_questions(load_questions(work / "questions"), work / "records.parquet", work / "labels", sample=None,
                    progress=True)
    row = {i: n for n, i in enumerate(ids)}
    sets = []
    for name, spec, truth in questions:
        votes = pq.read_table(work / "labels" / "votes" / f"{name}.parquet")
        order = np.array([row[i] for i in votes.column("id").to_pylist()])
        sets.append(BenchSet(f"{name}+embedding [{part}]", name, votes, truth[order],
                             f"{note}: {spec['question']} (rules and the embedding source)"))
    return sets


# a part of FOLDOC questions with the embedding source -> the rules files whose questions it asks
FOLDOC_EMBEDDED_PARTS = {"holdout23": ("holdout19", "holdout23"),  # blind: the first run of these with embedding
                         "foldoc_embedding": ("holdout20", "holdout21", "holdout22")}  # seen by new_questions


def foldoc_embedded_sets(cache: Path, part: str) -> list[BenchSet]:
    """The sets of a part of FOLDOC_EMBEDDED_PARTS: the questions of its rules files, each with the embedding
    source, on all of FOLDOC's entries (labelled in `cache`/embedded/`part`)."""
    ids, texts, questions = foldoc_questions(cache, *FOLDOC_EMBEDDED_PARTS[part])
    return embedded_sets(ids, texts, questions, cache / "embedded" / part, part,
                         f"FOLDOC entries (Debian {FOLDOC_DEB})")


# a part of WordNet questions with the embedding source -> (the rules files whose questions it asks, the parts of
# speech it keeps); each blind: none of its questions had been asked with the embedding source before
WORDNET_EMBEDDED_PARTS = {"holdout24": (WORDNET_PARTS, ("verb", "adj")), "holdout25": (WORDNET_PARTS, ("noun",))}


def wordnet_embedded_sets(cache: Path, part: str) -> list[BenchSet]:
    """The sets of a part of WORDNET_EMBEDDED_PARTS: the questions of its rules files on its parts of speech, each
    with the embedding source, on all synsets of the question's part of speech (labelled in
    `cache`/embedded/`part`/<pos>)."""
    rules_parts, kept = WORDNET_EMBEDDED_PARTS[part]
    specs = {name: spec for rules in rules_parts for name, spec in
             yaml.safe_load((HERE / f"rules_{rules}.yaml").read_text()).items() if spec["pos"] in kept}
    share = fetch_wordnet(cache / "wordnet")
    sets = []
    for pos in kept:
        ids, texts, files = read_wordnet(share, pos)
        questions = [(name, spec, np.isin(np.array(files), spec["yes_lexnames"])) for name, spec in specs.items()
                     if spec["pos"] == pos]
        sets += embedded_sets(ids, texts, questions, cache / "embedded" / part / pos, part,
                              f"WordNet 3.0 {pos}s (Debian {WORDNET_DEB})")
    return sets
