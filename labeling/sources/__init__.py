"""assay.labeling.sources: the cheap voters (rules, embedding similarity, labels files) and the factory."""

from .embedding import EmbeddingVoter, TextEmbedder
from .factory import SourceFactory
from .labels_file import LabelsFileError, LabelsFileVoter
from .rules import RulesVoter

__all__ = ["EmbeddingVoter", "LabelsFileError", "LabelsFileVoter", "RulesVoter", "SourceFactory", "TextEmbedder"]
