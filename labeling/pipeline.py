"""`label_questions`: sample a seed set, run every question's sources, combine, write the run folder.

Run folder:
  seed.parquet                      the sampled records (id, text, metadata); rejects.parquet if any
  sources/<question>/<source>.parquet  each source's votes (id, vote, conf), reused by a re-run when the
                                       source's spec and the records are unchanged
  votes/<question>.parquet          id + one int8 column per source (+ <source>__conf)
  labels/<question>.parquet         id, p_yes (float32), label (int8)
  report/                           Markdown + PNG diagnostics;  summary.json  the run in numbers
  cache/                            text embeddings, shared by all questions and re-runs

Cheap sources run first. A teacher with `skip_when_confident` is then asked only about the records the
cheap sources' combined label leaves below that confidence; it abstains on the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from assay.schemas import LoadedQuestion, write_parquet_atomic
from assay.schemas.questions import EmbeddingSource, LabelsFileSource, RulesSource

from .gold import gold_labels
from .model.combine import CombineResult, combine
from .model.report import write_question_report, write_run_report
from .seed import sample_records
from .sources.factory import TEACHER_KINDS, SourceFactory
from .votes import ABSTAIN, CONF_SUFFIX, WEIGHTS_KEY, vote_matrix

FINGERPRINT_KEY = b"assay.fingerprint"
SEED_KEY = b"assay.seed"
REJECTED_KEY = b"assay.rejected"
CHUNK = 256
SUMMARY_FILE = "summary.json"


@dataclass
class QuestionSummary:
    """How one question's labels were made."""

    method: str
    reason: str
    prior: float
    threshold: float
    yes_rate: float
    source_accuracy: dict[str, float]
    coverage: dict[str, float]
    weights: dict[str, float] = field(default_factory=dict)  # the spec's source weights (weighted vote)
    gold: dict[str, dict[str, float]] = field(default_factory=dict)  # method or source -> scores
    teachers: dict[str, dict] = field(default_factory=dict)  # teacher name -> requests, cost, ...
    warnings: list[str] = field(default_factory=list)  # what the label model could not identify, fallbacks
    balance_known: bool = True  # False: the class balance is a guess (0.5); the gate refuses such labels
    labels_follow_balance: bool = True  # False: one tie group moved the yes rate far from it; the gate refuses


@dataclass
class LabelRunSummary:
    """The run: where it is, what was sampled, and one `QuestionSummary` per question."""

    out_dir: str
    input: str
    seed_rows: int
    rejected_rows: int
    seconds: float
    questions: dict[str, QuestionSummary]

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what summary.json holds)."""
        return asdict(self)


def label_questions(questions: list[LoadedQuestion], input_path, out_dir, sample: int | None = 4000, seed: int = 0,
                    stratify: bool = False, gold_path=None, budget_usd: float | None = None,
                    progress: bool = True) -> LabelRunSummary:
    """Label a seed set for `questions` and write the run folder `out_dir` (see the module docstring)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(budget_usd, questions)
    factory = SourceFactory(out_dir, settings, progress=progress)
    records, rejected = _seed(questions, factory, input_path, out_dir, sample, seed, stratify)
    ids, texts = records.column("id").to_pylist(), records.column("text").to_pylist()
    _embed_once(questions, factory, texts, progress)
    summaries = {}
    for loaded in questions:
        gold = gold_labels(gold_path, loaded.spec.id) if gold_path else None
        votes, teachers = _question_votes(loaded, factory, ids, texts, out_dir, progress)
        matrix = vote_matrix(votes)
        result = combine(matrix, gold=gold, class_balance=loaded.spec.expected_yes_rate)
        write_parquet_atomic(votes, out_dir / "votes" / f"{loaded.spec.id}.parquet")
        write_parquet_atomic(result.probs, out_dir / "labels" / f"{loaded.spec.id}.parquet")
        gold_scores = write_question_report(out_dir / "report", loaded.spec, matrix, result, gold)
        summaries[loaded.spec.id] = _question_summary(loaded, result, gold_scores, teachers)
    summary = LabelRunSummary(str(out_dir), str(input_path), records.num_rows, rejected,
                              round(time.perf_counter() - started, 2), summaries)
    write_summary(summary)
    return summary


def read_question_summaries(out_dir: str | Path) -> dict[str, dict]:
    """Per question, what `summary.json` in a label run folder says of it ({} when there is none)."""
    path = Path(out_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    questions = data.get("questions", {}) if isinstance(data, dict) else {}
    return questions if isinstance(questions, dict) else {}


def write_summary(summary: LabelRunSummary) -> LabelRunSummary:
    """Write `summary.json` and the report index of `summary.out_dir`, keeping the questions an earlier run
    into the same folder labelled (`--only`, or one flow task per question); returns the merged run."""
    out_dir = Path(summary.out_dir)
    earlier = {qid: QuestionSummary(**q) for qid, q in read_question_summaries(out_dir).items()
               if qid not in summary.questions}
    merged = replace(summary, questions={**earlier, **summary.questions})
    write_run_report(out_dir / "report", merged)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(merged.to_dict(), indent=2) + "\n")
    return merged


def _settings(budget_usd: float | None, questions: list[LoadedQuestion]):
    """Deployment settings, loaded only when a question has a teacher; `budget_usd` overrides the file."""
    if not any(s.kind in TEACHER_KINDS for q in questions for s in q.spec.sources):
        return None
    from assay.labeling.teacher.settings import load_settings

    settings = load_settings()
    return settings.model_copy(update={"budget_usd": budget_usd}) if budget_usd else settings


def _seed(questions, factory, input_path, out_dir: Path, sample, seed, stratify) -> tuple[pa.Table, int]:
    """The seed records and the number of rejected input rows; reused from `seed.parquet` when drawn alike."""
    path = out_dir / "seed.parquet"
    key = json.dumps({"input": str(Path(input_path).resolve()), "sample": sample, "seed": seed,
                      "stratify": stratify}, sort_keys=True).encode()
    if path.exists():
        metadata = pq.read_schema(path).metadata or {}
        if metadata.get(SEED_KEY) == key:
            return pq.read_table(path), int(metadata.get(REJECTED_KEY, b"0"))
    if stratify and sample is not None:
        pool, reader = sample_records(input_path, 4 * sample, seed)
        records = _stratified(questions, factory, pool, sample, seed)
    else:
        records, reader = sample_records(input_path, sample, seed)
    reader.rejects.write(out_dir / "rejects.parquet")
    records = records.replace_schema_metadata({**(records.schema.metadata or {}), SEED_KEY: key,
                                               REJECTED_KEY: str(len(reader.rejects)).encode()})
    write_parquet_atomic(records, path)
    return records, len(reader.rejects)


def _stratified(questions, factory: SourceFactory, pool: pa.Table, sample: int, seed: int) -> pa.Table:
    """Up to half the sample from records where rules and labels files disagree on some question, rest random."""
    if pool.num_rows <= sample:
        return pool
    ids, texts = pool.column("id").to_pylist(), pool.column("text").to_pylist()
    conflict = np.zeros(pool.num_rows, dtype=bool)
    for loaded in questions:
        votes = [factory.build(loaded, s).vote(ids, texts).column("vote").to_numpy()
                 for s in loaded.spec.sources if isinstance(s, (RulesSource, LabelsFileSource))]
        if votes:
            stacked = np.stack(votes)
            conflict |= (stacked == 1).any(axis=0) & (stacked == 0).any(axis=0)
    rng = np.random.default_rng(seed)
    disagreeing = rng.permutation(np.flatnonzero(conflict))[: sample // 2]
    rest = rng.permutation(np.flatnonzero(~np.isin(np.arange(pool.num_rows), disagreeing)))
    chosen = np.concatenate([disagreeing, rest[: sample - len(disagreeing)]])
    return pool.take(np.sort(chosen))


def _embed_once(questions, factory: SourceFactory, texts: list[str], progress: bool) -> None:
    """Embed the seed texts once per embedding model, before any question asks for them."""
    models = {s.model for q in questions for s in q.spec.sources if isinstance(s, EmbeddingSource)}
    for model in sorted(models, key=str):
        embedder = factory.embedder(model)
        for start in tqdm(range(0, len(texts), CHUNK), desc="embedding seed texts", unit_scale=CHUNK,
                          disable=not progress):
            embedder.embed(texts[start:start + CHUNK])
        embedder.save()


def _fingerprint(loaded: LoadedQuestion, source, voter, ids: list[str]) -> bytes:
    spec = loaded.spec
    payload = {"question": spec.id, "version": spec.version, "source": source.model_dump(mode="json"),
               "voter": [type(voter).__name__, getattr(voter, "version", 1)],
               "examples": [e.model_dump() for e in spec.examples] if isinstance(source, EmbeddingSource) else None,
               "ids": hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest().encode()


def _source_votes(voter, ids: list[str], texts: list[str], path: Path, fingerprint: bytes,
                  progress: bool, label: str) -> pa.Table:
    """A source's votes on the given records: read back when already computed, else computed and written."""
    if path.exists() and (pq.read_schema(path).metadata or {}).get(FINGERPRINT_KEY) == fingerprint:
        return pq.read_table(path)
    parts = []
    with tqdm(total=len(ids), desc=label, disable=not progress, unit="rec") as bar:
        for start in range(0, len(ids), CHUNK):
            parts.append(voter.vote(ids[start:start + CHUNK], texts[start:start + CHUNK]))
            bar.update(min(CHUNK, len(ids) - start))
    table = pa.concat_tables(parts) if parts else voter.vote([], [])
    table = table.replace_schema_metadata({FINGERPRINT_KEY: fingerprint})
    write_parquet_atomic(table, path)
    return table


def _question_votes(loaded: LoadedQuestion, factory: SourceFactory, ids: list[str], texts: list[str],
                    out_dir: Path, progress: bool) -> tuple[pa.Table, dict[str, dict]]:
    """The votes table of one question (cheap sources first, then teachers) and the teachers' summaries."""
    spec = loaded.spec
    columns: dict[str, pa.Array] = {"id": pa.array(ids, pa.string())}
    weights = {s.name: s.weight for s in spec.sources}
    teachers: dict[str, dict] = {}
    ordered = sorted(spec.sources, key=lambda s: s.kind in TEACHER_KINDS)
    for source in ordered:
        voter = factory.build(loaded, source)
        asked = list(range(len(ids)))
        threshold = getattr(source, "skip_when_confident", None)
        if source.kind in TEACHER_KINDS and threshold and len(columns) > 1:
            p_yes = combine(pa.table(columns), method="label_model", weights=weights).probs.column("p_yes")
            confidence = np.maximum(p_yes.to_numpy(), 1 - p_yes.to_numpy())
            asked = np.flatnonzero(confidence < threshold).tolist()
        asked_ids = [ids[i] for i in asked]
        path = out_dir / "sources" / spec.id / f"{source.name}.parquet"
        table = _source_votes(voter, asked_ids, [texts[i] for i in asked], path,
                              _fingerprint(loaded, source, voter, asked_ids), progress, f"{spec.id}/{source.name}")
        vote = np.full(len(ids), ABSTAIN, dtype=np.int8)
        conf = np.full(len(ids), np.nan, dtype=np.float32)
        vote[asked] = table.column("vote").to_numpy(zero_copy_only=False)
        conf[asked] = table.column("conf").cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        columns[source.name] = pa.array(vote)
        if not np.isnan(conf).all():
            columns[f"{source.name}{CONF_SUFFIX}"] = pa.array(conf, from_pandas=True)
        if hasattr(voter, "summary"):
            teachers[source.name] = {**voter.summary(), "asked": len(asked), "skipped": len(ids) - len(asked)}
        if hasattr(voter, "close"):
            voter.close()
    votes = pa.table(columns)
    return votes.replace_schema_metadata({WEIGHTS_KEY: json.dumps(weights).encode()}), teachers


def _question_summary(loaded: LoadedQuestion, result: CombineResult, gold_scores: dict,
                      teachers: dict) -> QuestionSummary:
    labels = result.probs.column("label").to_numpy()
    return QuestionSummary(result.method, result.reason, result.prior, result.threshold,
                           round(float(labels.mean()) if len(labels) else 0.0, 4), result.source_accuracy,
                           result.coverage, {s.name: s.weight for s in loaded.spec.sources}, gold_scores, teachers,
                           result.warnings, result.balance_known, result.labels_follow_balance)
