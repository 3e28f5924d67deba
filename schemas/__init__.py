"""Question specs, input records and the output schema: the contracts every stage shares."""

from .loader import LoadedQuestion, Problem, QuestionSpecError, load_questions, select
from .output import RunMetadata, output_schema, write_parquet_atomic
from .questions import QuestionSpec, json_schema
from .records import RecordReader, RecordsError, Rejects, input_files

__all__ = [
    "LoadedQuestion",
    "Problem",
    "QuestionSpec",
    "QuestionSpecError",
    "RecordReader",
    "RecordsError",
    "Rejects",
    "RunMetadata",
    "input_files",
    "json_schema",
    "load_questions",
    "output_schema",
    "select",
    "write_parquet_atomic",
]
