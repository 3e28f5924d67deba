"""Gold labels for one question from a Parquet/CSV file, shared by labeling, distillation and flows.

The file needs `id` and either a column named like the question id or a `label` column (0/1).
`is_bad` has no column of its own in the Jigsaw data: it is derived as "any of the six Jigsaw labels".
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
DERIVED = {"is_bad": JIGSAW_LABELS}  # question id -> columns whose OR is its gold


def gold_labels(path: str | Path, question_id: str) -> pa.Table:
    """`id` (string) and `label` (int8 0/1) for `question_id`; raises ValueError naming the columns it needs."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: gold file not found")
    table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    if "id" not in table.column_names:
        raise ValueError(f"{path}: gold file has no `id` column (found: {', '.join(table.column_names)})")
    if question_id in table.column_names:
        label = table.column(question_id)
    elif question_id in DERIVED and all(c in table.column_names for c in DERIVED[question_id]):
        label = pc.greater(pc.max_element_wise(*[table.column(c) for c in DERIVED[question_id]]), 0)
    elif "label" in table.column_names:
        label = table.column("label")
    else:
        raise ValueError(f"{path}: no gold for {question_id!r}: add a column named {question_id!r} or `label` "
                         f"(found: {', '.join(table.column_names)})")
    return pa.table({"id": table.column("id").cast(pa.string()), "label": label.cast(pa.int8())})

