"""The labels-file source: yes/no answers recorded elsewhere (Parquet or CSV, an id and a 0/1 column)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from assay.schemas.questions import LabelsFileSource

from ..votes import ABSTAIN, vote_table

TRUE_STRINGS = {"1", "true", "yes", "y", "t"}
FALSE_STRINGS = {"0", "false", "no", "n", "f"}


class LabelsFileError(ValueError):
    """The labels file cannot be used (missing, unreadable, wrong columns or values)."""


def read_answers(path: Path, id_column: str, label_column: str) -> dict[str, int]:
    """id -> 0/1 from a Parquet or CSV file; null answers are skipped, anything else not 0/1 is an error."""
    if not path.exists():
        raise LabelsFileError(f"{path}: labels file not found (paths in a question file are relative to its folder)")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table = pq.read_table(path)
    elif suffix == ".csv":
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={id_column: pa.string()}))
    else:
        raise LabelsFileError(f"{path}: unsupported labels file format {suffix!r}; use .parquet or .csv")
    missing = [c for c in (id_column, label_column) if c not in table.column_names]
    if missing:
        raise LabelsFileError(f"{path}: no column(s) {', '.join(missing)} (found: {', '.join(table.column_names)}); "
                              "set id_column / label_column in the question's labels_file source")
    ids = table.column(id_column).cast(pa.string()).to_pylist()
    raw = table.column(label_column)
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(raw)).to_pylist()
        values = [None if v is None else 1 if v in TRUE_STRINGS else 0 if v in FALSE_STRINGS else v for v in text]
    else:
        values = raw.to_pylist()
    answers: dict[str, int] = {}
    for row, (record_id, value) in enumerate(zip(ids, values), start=1):
        if value is None or record_id is None:
            continue
        if value not in (0, 1) or isinstance(value, float) and value not in (0.0, 1.0):
            raise LabelsFileError(f"{path}: row {row} (id {record_id!r}): {label_column}={value!r} is not 0/1 "
                                  "(yes/no and true/false are accepted too)")
        if answers.setdefault(record_id, int(value)) != int(value):
            raise LabelsFileError(f"{path}: id {record_id!r} has conflicting answers; keep one row per id")
    return answers


class LabelsFileVoter:
    """Votes the recorded answer; records not in the file abstain, and so do answers `vote` excludes."""

    def __init__(self, source: LabelsFileSource, question_file: Path):
        from assay.schemas.loader import resolve

        self.name, self.keep = source.name, source.vote
        self.path = resolve(Path(question_file), source.path)
        self.answers = read_answers(self.path, source.id_column, source.label_column)

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """One vote per record."""
        votes = np.array([self.answers.get(i, ABSTAIN) for i in ids], dtype=np.int8)
        if self.keep == "yes":
            votes[votes == 0] = ABSTAIN
        elif self.keep == "no":
            votes[votes == 1] = ABSTAIN
        return vote_table(ids, votes)
