"""Scorer: the engine's public entry point — every loaded question's P(yes) for a batch of records.

Used by ``assay score`` (Parquet in, Parquet out), the Kafka consumer (``score_table``) and the
flows (``reload`` on promotion). Adapters come from the registry's current versions, or are added
and removed by hand; the base model is loaded once. Calls are serialised by a lock, so ``reload``
from another thread never changes the adapters in the middle of a batch. An adapter that `assay train`
saved with a lexical head (:mod:`assay.engine.lexical`) answers with the fusion of the two.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from transformers import AutoTokenizer

from assay.schemas.models import bundled_minilm
from assay.schemas.output import RunMetadata, output_schema
from assay.schemas.registry import AdapterVersion, Registry

from .adapters import load_adapter
from .batching import encode, token_batches
from .lexical import fuse
from .model import MultiLoraModel

DEFAULT_BATCH_TOKENS = 16_384
CHUNK_ROWS = 4_096  # records tokenised and sorted together: bounds memory whatever the input size


class Scorer:
    """One base model with its loaded adapters, scoring texts and record tables."""

    def __init__(self, base: str | Path | None = None, device: str = "cpu",
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, max_length: int | None = None,
                 share_lower: bool = True) -> None:
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.base = Path(base) if base is not None else bundled_minilm()
        self.model = MultiLoraModel.load(self.base, device=device, share_lower=share_lower)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.base))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.batch_tokens = batch_tokens
        self.requested_max_length = max_length
        self.registry: Registry | None = None
        self.questions: list[str] | None = None
        self.records = 0
        self.truncated = 0
        self._lock = threading.RLock()

    @classmethod
    def from_registry(cls, registry: Registry | str | Path, questions: Sequence[str] | None = None, device: str = "cpu",
                      batch_tokens: int = DEFAULT_BATCH_TOKENS, base: str | Path | None = None,
                      max_length: int | None = None, share_lower: bool = True) -> Scorer:
        """Load the current adapter of each question (all, or ``questions``) from a registry.

        ``registry`` is an ``assay.schemas.registry.Registry`` or its root folder. The base is
        ``base``, else the first adapter's manifest ``base_model`` when it is a local folder, else
        the bundled MiniLM; every adapter is checked against it (``Registry.check_base``).
        """
        if isinstance(registry, (str, Path)):
            registry = Registry(registry)
        wanted = list(questions) if questions else list(registry.questions())
        versions = [registry.current(qid) for qid in wanted]
        missing = [qid for qid, version in zip(wanted, versions) if version is None]
        if questions and missing:
            raise KeyError(f"no current adapter in the registry for: {', '.join(missing)}")
        versions = [version for version in versions if version is not None]
        if not versions:
            raise ValueError(f"registry {getattr(registry, 'root', registry)}: no question has a current adapter; "
                             "train and promote one with `assay train` (or `assay registry promote`)")
        if base is None:
            named = Path(str(versions[0].manifest.get("base_model", "")))
            base = named if str(named) and named.is_dir() else None
        scorer = cls(base, device=device, batch_tokens=batch_tokens, max_length=max_length, share_lower=share_lower)
        scorer.registry, scorer.questions = registry, (list(questions) if questions else None)
        for version in versions:
            scorer._add_version(version)
        return scorer

    @property
    def question_ids(self) -> list[str]:
        """Loaded questions, in load order (the order of output columns)."""
        return self.model.question_ids

    @property
    def max_length(self) -> int:
        """Token limit: the one asked for, else the longest adapter training length; capped at the model's."""
        limits = [n for n in (self.model.max_positions, self.tokenizer.model_max_length) if n and n < 1_000_000]
        cap = min(limits) if limits else 512
        trained = [a.max_length for a in self.model.adapters.values() if a.max_length]
        wanted = self.requested_max_length or (max(trained) if trained else cap)
        return min(wanted, cap)

    def add_adapter(self, question_id: str, path: str | Path, version: int = 0, threshold: float = 0.5,
                    manifest: dict[str, Any] | None = None) -> None:
        """Load (or replace) a question's adapter from a PEFT adapter directory, without reloading the base."""
        self.add_version(AdapterVersion(question_id, version, Path(path), {**(manifest or {}), "threshold": threshold}))

    def add_version(self, version: AdapterVersion) -> None:
        """Load (or replace) a question's adapter from a registry version, without reloading the base."""
        adapter = load_adapter(version, head_name=self.model.arch.head_name)
        with self._lock:
            self.model.add(adapter)

    def remove_adapter(self, question_id: str) -> None:
        """Stop scoring a question; raises ``KeyError`` if it is not loaded."""
        with self._lock:
            if question_id not in self.model.adapters:
                raise KeyError(f"question {question_id!r} is not loaded (loaded: {', '.join(self.question_ids)})")
            self.model.remove(question_id)

    def _add_version(self, version: AdapterVersion) -> None:
        self.registry.check_base(version, self.base)
        self.add_version(version)

    def reload(self) -> dict[str, int]:
        """Load the registry's newly promoted current versions (and new questions, unless restricted).

        Returns ``{question_id: version}`` of what changed; the base model is not reloaded.
        """
        if self.registry is None:
            raise RuntimeError("reload() needs a scorer built with Scorer.from_registry")
        changed = {}
        with self._lock:
            for qid in self.questions or self.registry.questions():
                current = self.registry.current(qid)
                loaded = self.model.adapters.get(qid)
                if current is not None and (loaded is None or loaded.version != current.version):
                    self._add_version(current)
                    changed[qid] = current.version
        return changed

    def score_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """P(yes) per loaded question: ``{question_id: float32 array, in the order of texts}``."""
        with self._lock:
            qids = self.question_ids
            if not qids:
                raise RuntimeError("no adapters loaded: add one with add_adapter() or load a registry")
            probs = np.empty((len(texts), len(qids)), dtype=np.float32)
            max_length = self.max_length
            for start in range(0, len(texts), CHUNK_ROWS):
                encoded = encode(self.tokenizer, texts[start:start + CHUNK_ROWS], max_length)
                self.truncated += encoded.truncated
                for batch in token_batches(encoded.ids, self.batch_tokens, len(qids), self.pad_id):
                    result = self.model.probabilities(batch.input_ids, batch.attention_mask)
                    probs[start + batch.indices] = result.cpu().numpy()
            self._fuse_lexical(texts, qids, probs)
            self.records += len(texts)
        return {qid: probs[:, k].copy() for k, qid in enumerate(qids)}

    def _fuse_lexical(self, texts: Sequence[str], qids: list[str], probs: np.ndarray) -> None:
        """Fuse each adapter's P(yes) with its lexical head, where it has one (in place); heads on the same
        TF-IDF features share one transform per chunk."""
        heads = {k: self.model.adapters[qid].lexical for k, qid in enumerate(qids)}
        heads = {k: head for k, head in heads.items() if head is not None}
        for start in range(0, len(texts) if heads else 0, CHUNK_ROWS):
            chunk, features = texts[start:start + CHUNK_ROWS], {}
            for k, head in heads.items():
                if head.features_key not in features:
                    features[head.features_key] = head.features(chunk)
                rows = slice(start, start + len(chunk))
                probs[rows, k] = fuse(probs[rows, k], head.logit(features=features[head.features_key]))

    def score_table(self, table: pa.Table, run_id: str | None = None) -> pa.Table:
        """Score a record table (``id``, ``text``) into the output schema: ``id``, ``<q>``, ``<q>_p`` per question.

        With ``run_id`` the schema carries the run metadata (base model, adapter versions).
        """
        with self._lock:
            scores = self.score_texts(table.column("text").to_pylist())
            thresholds = {qid: adapter.threshold for qid, adapter in self.model.adapters.items()}
            metadata = self.metadata(run_id) if run_id is not None else None
        columns: dict[str, Iterable] = {"id": table.column("id").cast(pa.string())}
        for qid, p in scores.items():
            columns[qid] = pa.array(p >= thresholds[qid], pa.bool_())
            columns[f"{qid}_p"] = pa.array(p, pa.float32())
        return pa.table(columns, schema=output_schema(list(scores), metadata))

    def metadata(self, run_id: str) -> RunMetadata:
        """Run metadata for output files: base model and ``{question_id: adapter version}``."""
        adapters = {qid: adapter.version for qid, adapter in self.model.adapters.items()}
        return RunMetadata(run_id=run_id, base_model=str(self.base), adapters=adapters)
