"""Build the voters of a question from its spec: cheap sources (rules, embedding, labels file) and teachers.

Teachers (LLM and local LLM) come from the teachers' modules, imported only when a question uses them.
"""

from __future__ import annotations

from pathlib import Path

from assay.schemas import LoadedQuestion
from assay.schemas.questions import EmbeddingSource, LabelsFileSource, LlmSource, LocalLlmSource, RulesSource

from ..votes import Voter
from .embedding import EmbeddingVoter, TextEmbedder
from .labels_file import LabelsFileVoter
from .rules import RulesVoter

TEACHER_KINDS = ("llm", "local_llm")


class SourceFactory:
    """Makes voters for a run; one `TextEmbedder` per embedding model is shared by all questions."""

    def __init__(self, run_dir: Path, settings=None, progress: bool = False):
        self.run_dir, self.settings, self.progress = Path(run_dir), settings, progress
        self.embedders: dict[str | None, TextEmbedder] = {}

    def embedder(self, model: str | None) -> TextEmbedder:
        """The run's embedder for `model` (None: the bundled MiniLM)."""
        if model not in self.embedders:
            self.embedders[model] = TextEmbedder(model, cache_dir=self.run_dir / "cache")
        return self.embedders[model]

    def build(self, loaded: LoadedQuestion, source) -> Voter:
        """The voter for one source of one question."""
        spec = loaded.spec
        if isinstance(source, RulesSource):
            return RulesVoter(source)
        if isinstance(source, EmbeddingSource):
            return EmbeddingVoter(spec, source, self.embedder(source.model))
        if isinstance(source, LabelsFileSource):
            return LabelsFileVoter(source, loaded.path)
        if isinstance(source, LlmSource):
            from ..teacher.client import LlmTeacher

            return LlmTeacher(spec, source, self.run_dir, settings=self.settings, progress=self.progress)
        if isinstance(source, LocalLlmSource):
            from ..local_llm import LocalTeacher

            return LocalTeacher(spec, source, progress=self.progress)
        raise ValueError(f"question {spec.id!r}: unknown source kind {source.kind!r}")
