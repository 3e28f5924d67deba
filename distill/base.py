"""The base model a question trains on: settings, loading (fp32 or 4-bit QLoRA), the LoRA layout, the cache.

:class:`TrainConfig` holds the distillation settings; :func:`load_base` loads the base as a 2-label
sequence classifier, :func:`lora_config` places the adapter on the top ``top_layers`` layers and
:func:`make_cache` computes the layers below them once (:mod:`assay.distill.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from peft import LoraConfig, TaskType
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from assay.engine.model import architecture
from assay.schemas.loader import LoadedQuestion
from assay.schemas.models import base_path, bundled_minilm
from assay.schemas.registry import base_sha256

from .cache import LowerLayerCache


@dataclass(frozen=True)
class TrainConfig:
    """Distillation settings; defaults chosen from the measurements in docs/QUALITY.md and PERFORMANCE.md."""

    top_layers: int = 1
    max_length: int = 128
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    lora_rank: int = 8
    lora_alpha: float | None = None  # default 2 x rank
    target_modules: tuple[str, ...] | None = None  # default: every nn.Linear inside a transformer layer
    loss: Literal["soft", "confidence"] = "soft"
    class_weight: Literal["balanced", "sqrt", "none"] = "sqrt"
    holdout: float = 0.2
    threshold_rule: Literal["prevalence", "f1"] = "prevalence"
    lexical_head: bool = True  # fuse a TF-IDF + LR head with the adapter (assay.engine.lexical)
    patience: int = 1
    seed: int = 0
    device: str = "cpu"
    quantize_4bit: bool | None = None  # None: on for CUDA bases over 2 GiB (QLoRA)
    threads: int | None = None

    @classmethod
    def for_spec(cls, loaded: LoadedQuestion, **overrides: Any) -> TrainConfig:
        """Defaults, then the question's ``training:`` block, then explicit overrides (None = unset)."""
        training = loaded.spec.training
        values: dict[str, Any] = {"lora_rank": training.lora_rank, "lora_alpha": training.lora_alpha,
                                  "top_layers": training.top_layers, "epochs": training.epochs,
                                  "learning_rate": training.learning_rate,
                                  "target_modules": tuple(training.target_modules) if training.target_modules else None}
        values = {k: v for k, v in values.items() if v is not None}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("target_modules"), list):
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)


def resolve_base(loaded: LoadedQuestion, base: str | Path | None) -> Path:
    """``base`` if given, else the spec's ``training.base_model``, else MiniLM.

    Either may be a known name (``assay.schemas.models.BASES``: minilm-l6, smollm2-135m) or a folder
    (the spec's relative to the question file).
    """
    if base is not None:
        return base_path(base)
    named = loaded.spec.training.base_model
    if named:
        relative = Path(loaded.path).parent / named
        return relative if relative.exists() else base_path(named)
    return bundled_minilm()


def quantization_config(config: TrainConfig, weight_bytes: int = 0):
    """QLoRA: a 4-bit NF4 ``BitsAndBytesConfig`` (bf16 compute, double quantisation) on CUDA, else None.

    ``quantize_4bit=None`` turns it on for CUDA bases of more than 2 GiB of weights (decoder LLMs).
    """
    wanted = config.quantize_4bit if config.quantize_4bit is not None else (
        config.device == "cuda" and weight_bytes > QLORA_AUTO_BYTES)
    if not wanted:
        return None
    if config.device != "cuda":
        raise ValueError("4-bit QLoRA needs a CUDA device (bitsandbytes); use device='cuda' or quantize_4bit=False")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


QLORA_AUTO_BYTES = 2 * 1024**3  # on CUDA, bases with more weight bytes than this train as 4-bit QLoRA


def _weight_bytes(base: Path) -> int:
    return sum(p.stat().st_size for p in Path(base).glob("*") if p.suffix in (".safetensors", ".bin"))


def load_base(base: Path, config: TrainConfig) -> nn.Module:
    """The base as a 2-label sequence classifier: fp32, or 4-bit NF4 with bf16 compute for QLoRA on CUDA."""
    quant = quantization_config(config, _weight_bytes(base))
    kwargs: dict[str, Any] = {"num_labels": 2}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": 0}, dtype=torch.bfloat16)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the fresh head is expected: no "MISSING" load report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif config.device != "cpu":
        model = model.to(config.device)
    return model


def first_adapted_layer(n_layers: int, config: TrainConfig) -> int:
    """Index of the lowest layer the adapter touches: everything below it is shared and cached."""
    return n_layers - min(config.top_layers, n_layers)


def lora_config(model: nn.Module, config: TrainConfig) -> LoraConfig:
    """LoRA on the top ``top_layers`` layers' linears, the classification head trained in full."""
    arch = architecture(model)
    targets = config.target_modules or sorted({name.rsplit(".", 1)[-1] for name, module in arch.stages[0].named_modules()
                                               if isinstance(module, nn.Linear)})
    layers = list(range(first_adapted_layer(arch.n_layers, config), arch.n_layers))
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_rank, lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                      lora_dropout=0.0, target_modules=list(targets), layers_to_transform=layers,
                      layers_pattern=arch.layers_path.rsplit(".", 1)[-1], modules_to_save=[arch.head_name])


def make_cache(base: Path, config: TrainConfig, sha: str | None = None) -> LowerLayerCache:
    """A lower-layer cache for ``base`` at the first adapted layer of ``config`` (its own model instance)."""
    model = load_base(base, config)
    layer = first_adapted_layer(architecture(model).n_layers, config)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return LowerLayerCache(model, tokenizer, config.max_length, layer, sha or base_sha256(base), device=config.device)
