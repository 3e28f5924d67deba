"""assay.engine: one base model, every question's LoRA adapter in one batch; file runs and the Kafka service.

The handful of names a caller needs; the Kafka service is `assay.engine.stream`.
"""

from .adapters import AdapterError, LoraAdapter, load_adapter
from .model import MultiLoraModel
from .run import ResumeError, RunSummary, score_files
from .scorer import Scorer

__all__ = ["AdapterError", "LoraAdapter", "MultiLoraModel", "ResumeError", "RunSummary", "Scorer", "load_adapter",
           "score_files"]
