"""Read one PEFT LoRA adapter directory (sequence classification) into plain tensors for the engine.

PEFT's LoRA computes ``lora_B(lora_A(x)) * scaling`` with ``lora_A.weight [r, in]`` and
``lora_B.weight [out, r]``; the engine stores ``A = lora_A.weight.T [in, r]`` and
``B = lora_B.weight.T [r, out]`` so that the delta is ``scaling * (x @ A) @ B``. Anything in the
adapter the engine cannot apply exactly (DoRA, LoRA bias, extra saved modules, ...) is an error,
never ignored: an adapter accepted but not applied is the silent failure the parity tests guard.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from assay.schemas.registry import AdapterVersion

from .lexical import LexicalHead, load_lexical_head

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterError(ValueError):
    """An adapter directory cannot be loaded, or holds something the engine cannot apply exactly."""


@dataclass(frozen=True)
class LoraWeights:
    """One adapted linear layer of one adapter: ``delta(x) = scale * (x @ a) @ b``."""

    a: torch.Tensor  # [in, r]
    b: torch.Tensor  # [r, out]
    scale: float


@dataclass(frozen=True)
class LoraAdapter:
    """A question's adapter version (what the registry says of it) with its LoRA weights per module path
    (relative to the model) and its head, as tensors."""

    source: AdapterVersion
    modules: dict[str, LoraWeights]
    head: dict[str, torch.Tensor]  # parameter name of the head module ("weight", "bias") -> tensor
    lexical: LexicalHead | None = None  # fused with the adapter's P(yes) when `assay train` saved one

    @property
    def question_id(self) -> str:
        return self.source.question_id

    @property
    def version(self) -> int:
        return self.source.version

    @property
    def threshold(self) -> float:
        return self.source.threshold

    @property
    def max_length(self) -> int | None:
        """The token length the adapter was trained at, when its manifest says."""
        value = self.source.manifest.get("max_length")
        return int(value) if value else None


def _check_config(config: dict[str, Any], path: Path) -> None:
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    if config.get("task_type") not in ("SEQ_CLS", None):
        problems.append(f"task_type is {config.get('task_type')!r}, not 'SEQ_CLS'")
    for flag in ("use_dora", "lora_bias", "fan_in_fan_out", "use_qalora"):
        if config.get(flag):
            problems.append(f"{flag}=true is not supported")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r} is not supported (only 'none')")
    if config.get("layer_replication") or config.get("trainable_token_indices"):
        problems.append("layer_replication / trainable_token_indices are not supported")
    if problems:
        raise AdapterError(f"{path}: cannot apply this adapter exactly: " + "; ".join(problems))


def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``alpha_pattern`` rule (``peft.utils.other.get_pattern_key``): the first pattern that matches
    the end of the module path at a dot boundary; without importing PEFT (seconds of start-up)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(source: AdapterVersion, head_name: str = "classifier") -> LoraAdapter:
    """Load an adapter version's PEFT directory; ``head_name`` is the model's classification head module."""
    path = source.path
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise AdapterError(f"{path}: not a PEFT adapter directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads(config_path.read_text())
    _check_config(config, path)
    state = load_file(str(weights_path))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    head_prefix = f"{PREFIX}{head_name}."
    for key, tensor in state.items():
        if key.startswith(head_prefix) and key.count(".") == head_prefix.count("."):
            head[key[len(head_prefix):]] = tensor
        elif key.startswith(PREFIX) and key.endswith((".lora_A.weight", ".lora_B.weight")):
            module, kind = key[len(PREFIX):].rsplit(".", 2)[:2]
            pairs.setdefault(module, {})[kind] = tensor
        else:
            raise AdapterError(f"{path}: unexpected tensor {key!r}; the engine applies LoRA A/B weights and the "
                               f"{head_name!r} head only")
    if "weight" not in head:
        raise AdapterError(f"{path}: no classification head {head_name!r} saved; train with "
                           f"modules_to_save=[{head_name!r}]")
    if head["weight"].shape[0] != 2:
        raise AdapterError(f"{path}: head has {head['weight'].shape[0]} labels; assay adapters are yes/no (2)")
    alpha_pattern: dict[str, float] = config.get("alpha_pattern") or {}
    modules = {}
    for module, tensors in sorted(pairs.items()):
        if set(tensors) != {"lora_A", "lora_B"}:
            raise AdapterError(f"{path}: module {module!r} has {sorted(tensors)}, needs lora_A and lora_B")
        a, b = tensors["lora_A"].T.contiguous(), tensors["lora_B"].T.contiguous()
        rank = a.shape[1]
        alpha = pattern_value(alpha_pattern, module, config["lora_alpha"])
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        modules[module] = LoraWeights(a=a, b=b, scale=float(scale))
    if not modules:
        raise AdapterError(f"{path}: no LoRA weights in {WEIGHTS_FILE}")
    return LoraAdapter(source=source, modules=modules, head=head, lexical=load_lexical_head(path))
