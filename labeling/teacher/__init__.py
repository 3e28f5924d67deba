"""The LLM teacher client: online and Batch API modes, cache, cost, rate limits, residency, audit, masking.

The names below load on first use, so importing a light module of this package (the prompt, the
settings) does not import the openai client (`assay --help` stays fast).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"LlmTeacher": "client", "LlmTeacherError": "errors", "Guard": "residency", "ResidencyError": "residency",
            "check_endpoint": "residency", "Settings": "settings", "SettingsError": "settings",
            "load_settings": "settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
