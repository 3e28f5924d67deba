"""Builders for the engine tests: real PEFT adapters with random non-zero weights, a tiny random
Llama-shaped base with an offline tokenizer, and adapters published in a real registry.

PEFT initialises ``lora_B`` to zero: an adapter straight from ``get_peft_model`` changes nothing,
and a test that "applies" it could not fail. Every LoRA A/B and the head are randomised here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from assay.schemas.models import bundled_minilm
from assay.schemas.registry import Registry, base_sha256

WORDS = ("the a is not you this that comment good bad toxic nice stupid idiot thanks please article "
         "edit page wikipedia talk user hate love kill people").split()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run a test with one torch thread (restored after): tiny test batches gain nothing from threads, and
    on a shared, busy machine waiting for the second thread makes each small op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_adapter(base: Path, out: Path, seed: int, rank: int, target_modules: list[str],
                 layers_to_transform: list[int] | None = None, head: str = "classifier",
                 alpha: int | None = None, lora_std: float = 0.05, head_std: float = 0.5,
                 **lora_options) -> Path:
    """Save a PEFT LoRA adapter for ``base`` with random A, B and head (never PEFT's zero B).

    ``head_std`` scales the random head: a real model's hidden states are larger than a random
    model's, so its parity tests need a smaller head for P(yes) not to saturate at 0 or 1.

    ``lora_options`` go to ``LoraConfig`` as they are (``alpha_pattern``, ``use_rslora``, ...).
    """
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=alpha or 2 * rank,
                        target_modules=target_modules, layers_to_transform=layers_to_transform,
                        modules_to_save=[head], **lora_options)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * lora_std)
            elif "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * head_std)
    peft_model.save_pretrained(str(out))
    return out


def peft_probabilities(base: Path, adapter: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reference: ``PeftModel.from_pretrained`` with one adapter, P(yes) = softmax(logits)[:, 1]."""
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2)
    peft_model = PeftModel.from_pretrained(model, str(adapter)).eval()
    with torch.inference_mode():
        logits = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
    return torch.softmax(logits.float(), dim=-1)[:, 1]


def zeroed_lora_copy(adapter: Path, out: Path) -> Path:
    """The same adapter (same head) with every LoRA weight zeroed: the control for the guard."""
    shutil.copytree(adapter, out)
    state = load_file(str(out / "adapter_model.safetensors"))
    save_file({k: torch.zeros_like(v) if ".lora_" in k else v for k, v in state.items()},
              str(out / "adapter_model.safetensors"))
    return out


def make_llama_base(out: Path, layers: int = 3, seed: int = 0) -> Path:
    """A random-weight Llama-shaped classifier (hidden 64) with a WordLevel tokenizer, saved offline."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", model_max_length=64)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=2, eos_token_id=2, num_labels=2)
    LlamaForSequenceClassification(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def minilm() -> Path:
    """The bundled MiniLM base directory."""
    return bundled_minilm()


def publish(registry: Path, question_id: str, version: int, adapter: Path, base: Path,
            threshold: float = 0.5, max_length: int = 128) -> Path:
    """Save ``adapter`` in a real :class:`Registry` as ``version`` (the next free number) and promote it.

    The manifest carries the base's path and weights hash, so ``check_base`` really compares weights.
    """
    saved = Registry(registry).save(question_id, adapter, {
        "base_model": str(base), "base_model_sha256": base_sha256(base), "max_length": max_length,
        "threshold": threshold, "spec_version": 1, "training": {}, "sources": {}, "metrics": {}})
    if saved.version != version:
        raise ValueError(f"{registry}/{question_id}: the registry allocated version {saved.version}, not {version}")
    Registry(registry).promote(question_id, version)
    return saved.path
