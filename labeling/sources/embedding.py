"""The embedding source: similarity of each text to the spec's yes and no examples (MiniLM).

Texts are embedded once per run by a shared `TextEmbedder` (every question's embedding source reuses the
same vectors) and cached on disk by a hash of the text, so re-runs embed nothing twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assay.schemas.models import bundled_minilm
from assay.schemas.questions import EmbeddingSource, QuestionSpec

from ..votes import ABSTAIN, NO, YES, vote_table

MAX_TOKENS = 128  # MiniLM reads the first 128 word pieces: enough for a verdict, twice as fast as 256
SURE_MARGIN = 0.2  # a similarity margin this large is a sure vote (confidence 1)


class SentenceEncoder:
    """A sentence-transformers model folder run with plain transformers: the encoder, then the folder's
    pooling (mean or CLS, from `1_Pooling/config.json`) and L2 normalisation — the same vectors as
    `SentenceTransformer(path).encode(..., normalize_embeddings=True)` without importing that library."""

    def __init__(self, path: Path):
        import json

        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        pooling = path / "1_Pooling" / "config.json"
        self.cls = pooling.exists() and json.loads(pooling.read_text()).get("pooling_mode_cls_token", False)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; batches of similar length, so little padding is computed."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with self.torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                if self.cls:
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = self.torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


class TextEmbedder:
    """Unit-length sentence embeddings of texts, computed once and cached in memory and (`save()`) in `cache_dir`."""

    def __init__(self, model_path: str | Path | None = None, cache_dir: Path | None = None, batch_size: int = 64):
        self.model_path = Path(model_path) if model_path else bundled_minilm()
        self.batch_size = batch_size
        self._model: SentenceEncoder | None = None
        self._unsaved = False
        self._vectors: dict[str, np.ndarray] = {}
        model_tag = hashlib.blake2b(str(self.model_path.resolve()).encode(), digest_size=6).hexdigest()
        self.cache_file = Path(cache_dir) / f"embeddings-{model_tag}.parquet" if cache_dir else None
        if self.cache_file and self.cache_file.exists():
            cached = pq.read_table(self.cache_file)
            matrix = np.stack(cached.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
            self._vectors = dict(zip(cached.column("key").to_pylist(), matrix))

    @property
    def model(self) -> SentenceEncoder:
        """The encoder, loaded on first use."""
        if self._model is None:
            self._model = SentenceEncoder(self.model_path)
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; only texts not seen before are run through the model."""
        keys = [_text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            by_key = dict(zip(keys, texts))
            vectors = self.model.encode([by_key[k] for k in missing], self.batch_size)
            self._vectors.update(zip(missing, vectors))
            self._unsaved = True
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def save(self) -> None:
        """Write the vectors computed since the last save to the cache file (if there is one)."""
        if self.cache_file is None or not self._unsaved:
            return
        from assay.schemas import write_parquet_atomic

        keys = list(self._vectors)
        vectors = pa.array([self._vectors[k] for k in keys], pa.list_(pa.float32()))
        write_parquet_atomic(pa.table({"key": keys, "vector": vectors}), self.cache_file)
        self._unsaved = False


class EmbeddingVoter:
    """Votes yes (no) when a text is closer to the nearest yes (no) example by more than the abstain band.

    The confidence grows linearly with the margin, from 0.5 at a margin of 0 to 1 at SURE_MARGIN, so a
    near tie counts little in the label model (on the Jigsaw dev set this lifts its macro-F1 from 0.39 to
    0.61: the few examples make many weak, wrong yes votes on rare questions).
    """

    version = 2  # changes to how votes are computed invalidate stored votes

    def __init__(self, spec: QuestionSpec, source: EmbeddingSource, embedder: TextEmbedder):
        yes = [e.text for e in spec.examples if e.answer]
        no = [e.text for e in spec.examples if not e.answer]
        if not yes or not no:
            raise ValueError(f"question {spec.id!r}: the embedding source needs at least one yes and one no "
                             "example under `examples` (add them, or remove the embedding source)")
        self.name, self.band, self.embedder = source.name, source.abstain_band, embedder
        self.yes_examples, self.no_examples = embedder.embed(yes), embedder.embed(no)

    def margins(self, texts: list[str]) -> np.ndarray:
        """Similarity to the nearest yes example minus similarity to the nearest no example."""
        vectors = self.embedder.embed(texts)
        if not len(texts):
            return np.zeros(0, dtype=np.float32)
        return (vectors @ self.yes_examples.T).max(axis=1) - (vectors @ self.no_examples.T).max(axis=1)

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """One vote per record."""
        margin = self.margins(texts)
        votes = np.where(margin > self.band, YES, np.where(margin < -self.band, NO, ABSTAIN))
        conf = np.clip(0.5 + np.abs(margin) / (2 * SURE_MARGIN), 0.5, 1.0)
        return vote_table(ids, votes, np.where(votes == ABSTAIN, np.nan, conf))
