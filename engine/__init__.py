"""assay.engine: one base model, every question's LoRA adapter in one batch; file runs and the Kafka service.

The handful of names a caller needs; the Kafka service is `assay.engine.stream`. The names load on first
use, so light modules of the engine (the stream's settings, the batching helpers) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AdapterError": "adapters", "LoraAdapter": "adapters", "load_adapter": "adapters",
    "MultiLoraModel": "model",
    "ResumeError": "run", "RunSummary": "run", "score_files": "run",
    "Scorer": "scorer",
}
__all__ = ["AdapterError", "LoraAdapter", "MultiLoraModel", "ResumeError", "RunSummary", "Scorer", "load_adapter",
           "score_files"]

if TYPE_CHECKING:
    from .adapters import AdapterError, LoraAdapter, load_adapter
    from .model import MultiLoraModel
    from .run import ResumeError, RunSummary, score_files
    from .scorer import Scorer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'assay.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
