"""A student's lexical head: TF-IDF + logistic regression saved beside its LoRA adapter, fused with it.

`assay train` fits the head on the same soft labels and split as the adapter (the TF-IDF baseline of the
promotion gate) and saves it in the adapter's folder, in a plain format (no pickle): ``lexical_head.json``
(each vectorizer's settings and terms in index order, the intercept) and ``lexical_head.safetensors``
(the idf weights and the coefficients). The engine reads it back with the same scikit-learn vectorizers,
so its scores equal the fitted model's. The student's P(yes) is then :func:`fuse` of the adapter's and the
head's: the sigmoid of the mean of their logits (equal weights, fixed before it was measured; docs/QUALITY.md).
A PEFT folder without these files is scored by its adapter alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEAD_FILE, WEIGHTS_FILE, FORMAT = "lexical_head.json", "lexical_head.safetensors", 1
MAX_SHARED = 8  # distinct vectorizer sets kept loaded (one per label run in use)
_LOADED: dict[str, tuple[tuple[str, Any], ...]] = {}
# the vectorizer settings saved and restored (everything that changes transform() once the vocabulary is fixed)
SETTINGS = (
    "analyzer",
    "ngram_range",
    "lowercase",
    "strip_accents",
    "token_pattern",
    "sublinear_tf",
    "norm",
    "use_idf",
    "smooth_idf",
    "binary",
)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) in float64, clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def fuse(p_adapter: np.ndarray, head_logit: np.ndarray) -> np.ndarray:
    """The student's P(yes): sigmoid of the mean of the adapter's logit and the lexical head's."""
    return 1.0 / (1.0 + np.exp(-(logit(p_adapter) + np.asarray(head_logit, dtype=np.float64)) / 2))


@dataclass(frozen=True)
class LexicalHead:
    """Fitted TF-IDF vectorizers (a feature union, concatenated in order) and a logistic regression on them."""

    vectorizers: tuple[tuple[str, Any], ...]  # (name, fitted sklearn TfidfVectorizer)
    coef: np.ndarray  # [features]
    intercept: float
    features_key: str  # same key, same features: heads of one label run share one transform per batch

    def features(self, texts: Sequence[str]):
        """The sparse TF-IDF rows of ``texts``."""
        import scipy.sparse as sp

        return sp.hstack([v.transform(list(texts)) for _, v in self.vectorizers], format="csr")

    def logit(self, texts: Sequence[str] | None = None, features=None) -> np.ndarray:
        """The head's logit on ``texts`` (or on their precomputed ``features``)."""
        rows = self.features(texts) if features is None else features
        return np.asarray(rows @ self.coef, dtype=np.float64).ravel() + self.intercept

    def probability(self, texts: Sequence[str]) -> np.ndarray:
        """The head's own P(yes) on ``texts``."""
        return 1.0 / (1.0 + np.exp(-self.logit(texts)))

    def save(self, folder: Path) -> None:
        """Write ``lexical_head.json`` and ``lexical_head.safetensors`` into ``folder``."""
        from safetensors.numpy import save_file

        described, idf = _describe(self.vectorizers)
        head = {
            "format": FORMAT,
            "fusion": "sigmoid(mean of adapter and head logits)",
            "intercept": self.intercept,
            "vectorizers": described,
        }
        (folder / HEAD_FILE).write_text(json.dumps(head))
        save_file({"coef": np.ascontiguousarray(self.coef, dtype=np.float64), **idf}, str(folder / WEIGHTS_FILE))


def _describe(vectorizers: tuple[tuple[str, Any], ...]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """What the head file holds of fitted vectorizers: settings and terms in index order, and the idf tensors."""
    described, idf = [], {}
    for name, vectorizer in vectorizers:
        params = vectorizer.get_params()
        settings = {key: list(params[key]) if isinstance(params[key], tuple) else params[key] for key in SETTINGS}
        terms = [term for term, _ in sorted(vectorizer.vocabulary_.items(), key=lambda item: item[1])]
        described.append({"name": name, "settings": settings, "terms": terms})
        idf[f"idf.{name}"] = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64)
    return described, idf


def _features_key(described: list[dict[str, Any]], idf: dict[str, np.ndarray]) -> str:
    """A digest of the vectorizers as the head file describes them: equal for equal features."""
    digest = hashlib.blake2b(json.dumps(described).encode(), digest_size=16)
    for item in described:
        digest.update(np.ascontiguousarray(idf[f"idf.{item['name']}"], dtype=np.float64).tobytes())
    return digest.hexdigest()


def from_fitted(union, model) -> LexicalHead:
    """A head from a fitted sklearn ``FeatureUnion`` of TF-IDF vectorizers and a fitted ``LogisticRegression``."""
    vectorizers = tuple(union.transformer_list)
    return LexicalHead(
        vectorizers,
        np.asarray(model.coef_, dtype=np.float64).ravel(),
        float(model.intercept_[0]),
        _features_key(*_describe(vectorizers)),
    )


def load_lexical_head(folder: Path) -> LexicalHead | None:
    """The head saved in an adapter folder, or None when it has none; a damaged one is a ``ValueError``."""
    path = folder / HEAD_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    head = json.loads(path.read_text())
    if head.get("format") != FORMAT:
        raise ValueError(f"{path}: lexical head format {head.get('format')!r}, this engine reads {FORMAT}")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    for described in head["vectorizers"]:
        if f"idf.{described['name']}" not in tensors:
            raise ValueError(f"{folder / WEIGHTS_FILE}: no idf weights for vectorizer {described['name']!r}")
    key = _features_key(head["vectorizers"], tensors)
    if key not in _LOADED:  # heads of one label run share their vectorizers: one copy in memory
        while len(_LOADED) >= MAX_SHARED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = _vectorizers(head, tensors, path)
    vectorizers = _LOADED[key]
    coef = tensors["coef"]
    width = sum(len(v.vocabulary_) for _, v in vectorizers)
    if coef.shape != (width,):
        raise ValueError(f"{folder / WEIGHTS_FILE}: {coef.shape[0]} coefficients for {width} TF-IDF features")
    return LexicalHead(vectorizers, coef, float(head["intercept"]), key)


def _vectorizers(head: dict[str, Any], tensors: dict[str, np.ndarray], path: Path) -> tuple[tuple[str, Any], ...]:
    """The fitted vectorizers a head file describes."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizers = []
    for described in head["vectorizers"]:
        settings = dict(described["settings"], ngram_range=tuple(described["settings"]["ngram_range"]))
        idf = tensors[f"idf.{described['name']}"]
        if idf.shape != (len(described["terms"]),):
            raise ValueError(
                f"{path}: vectorizer {described['name']!r}: {idf.shape[0]} idf weights for "
                f"{len(described['terms'])} terms"
            )
        vectorizer = TfidfVectorizer(vocabulary=described["terms"], **settings)
        vectorizer.idf_ = idf
        vectorizers.append((described["name"], vectorizer))
    return tuple(vectorizers)
