"""Gold labels for one question from a Parquet/CSV file, shared by labeling, distillation and flows.

The file needs `id` and either a column named like the question id or a `label` column (0/1). A
question whose gold is derived from other columns says so in a `gold.json` beside the file (the
data's own knowledge, not the library's): ``{"derived": {"is_bad": ["toxic", "insult", ...]}}`` makes
`is_bad` 1 wherever any of those columns is 1 (the bundled Jigsaw data ships one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

DERIVED_FILE = "gold.json"


def derived_columns(path: Path) -> dict[str, list[str]]:
    """``{question_id: columns whose OR is its gold}`` from the `gold.json` beside a gold file (none: {})."""
    sidecar = path.parent / DERIVED_FILE
    if not sidecar.is_file():
        return {}
    try:
        derived = json.loads(sidecar.read_text()).get("derived", {})
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{sidecar}: not a gold description ({error}); expected "
                         '{"derived": {"question_id": ["column", ...]}}') from error
    if not isinstance(derived, dict) or not all(isinstance(c, list) for c in derived.values()):
        raise ValueError(f'{sidecar}: "derived" must map question ids to lists of column names')
    return derived


def gold_labels(path: str | Path, question_id: str) -> pa.Table:
    """`id` (string) and `label` (int8 0/1) for `question_id`; raises ValueError naming the columns it needs."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: gold file not found")
    table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    if "id" not in table.column_names:
        raise ValueError(f"{path}: gold file has no `id` column (found: {', '.join(table.column_names)})")
    derived = derived_columns(path).get(question_id)
    if question_id in table.column_names:
        label = table.column(question_id)
    elif derived and all(c in table.column_names for c in derived):
        label = pc.greater(pc.max_element_wise(*[table.column(c) for c in derived]), 0)
    elif "label" in table.column_names:
        label = table.column("label")
    else:
        raise ValueError(f"{path}: no gold for {question_id!r}: add a column named {question_id!r} or `label`, or "
                         f"derive it in {path.parent / DERIVED_FILE} (found: {', '.join(table.column_names)})")
    return pa.table({"id": table.column("id").cast(pa.string()), "label": label.cast(pa.int8())})


def gold_rows(ids: pa.Array, gold: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `ids` that have a gold label (`gold`: id, label), and those labels as bools."""
    lookup = dict(zip(gold.column("id").cast(pa.string()).to_pylist(), gold.column("label").to_pylist()))
    rows = [(i, lookup[key]) for i, key in enumerate(ids.cast(pa.string()).to_pylist())
            if lookup.get(key) is not None]
    return np.array([r for r, _ in rows], dtype=np.int64), np.array([int(v) for _, v in rows], dtype=bool)
