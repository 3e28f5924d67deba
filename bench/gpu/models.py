"""Random-weight models and adapters for the GPU checks, built from configs (nothing is downloaded).

* :func:`random_decoder`: a ``MistralForSequenceClassification`` built directly on the device in its dtype;
* :func:`random_adapters`: in-memory engine adapters (``LoraAdapter``) with random non-zero A, B and head;
* :func:`llama_folder`: a saved random ``LlamaForSequenceClassification`` folder (for PEFT round trips);
* :func:`decoder_flops_per_token`: the base's forward FLOPs per token, for MFU.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from assay.engine.adapters import LoraAdapter, LoraWeights
from assay.engine.model import MultiLoraModel
from assay.schemas.registry import AdapterVersion

DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=32000)
TINY_MISTRAL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=500)
SMALL_LLAMA = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
                   num_key_value_heads=4, vocab_size=8192)
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=300)


def random_decoder(fields: dict, device: str, dtype: torch.dtype):
    """A random-weight ``MistralForSequenceClassification`` (2 labels, pad id 0) built on ``device``."""
    from transformers import MistralConfig, MistralForSequenceClassification

    config = MistralConfig(**fields, max_position_embeddings=4096, num_labels=2, pad_token_id=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MistralForSequenceClassification(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def random_adapters(model: MultiLoraModel, count: int, rank: int, layers: range, seed: int = 0,
                    prefix: str = "q") -> list[LoraAdapter]:
    """``count`` adapters of ``rank`` on every decoder linear of ``layers``, generated on the model's device."""
    device, dtype = model.device, model.dtype
    g = torch.Generator(device=device).manual_seed(seed)
    hidden = model.config.hidden_size
    adapters = []
    for i in range(count):
        modules = {}
        for layer in layers:
            for path, linear in model.arch.stages[layer].named_modules():
                if path.rsplit(".", 1)[-1] not in DECODER_TARGETS:
                    continue
                linear = getattr(linear, "base", linear)  # already wrapped by the engine
                a = torch.randn(linear.in_features, rank, generator=g, device=device, dtype=dtype)
                b = torch.randn(rank, linear.out_features, generator=g, device=device, dtype=dtype)
                modules[f"{model.arch.layers_path}.{layer}.{path}"] = LoraWeights(
                    a=a / math.sqrt(linear.in_features), b=b * 0.01, scale=2.0)
        head = {"weight": torch.randn(2, hidden, generator=g, device=device, dtype=dtype) / math.sqrt(hidden)}
        source = AdapterVersion(f"{prefix}{i}", 1, Path("."), {"threshold": 0.5})
        adapters.append(LoraAdapter(source=source, modules=modules, head=head))
    return adapters


def llama_folder(out: Path, fields: dict, seed: int = 0) -> Path:
    """Save a random-weight ``LlamaForSequenceClassification`` (fp32, pad id 0) to ``out``."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(**fields, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         num_labels=2)
    LlamaForSequenceClassification(config).save_pretrained(str(out))
    return out


def token_batch(vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random token ids (pad 0, ids from 3) of the given lengths, and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab, (n,), generator=g)
    return ids, (ids != 0).long()


def decoder_flops_per_token(config, seq_len: int) -> float:
    """Forward FLOPs per token of the base at ``seq_len``: 2 x linear weights + attention (4 T d per layer)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d, f, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * head_dim
    q_o = 2 * d * config.num_attention_heads * head_dim
    linear = q_o + 2 * d * kv + 3 * d * f
    return config.num_hidden_layers * (2 * linear + 4 * seq_len * config.num_attention_heads * head_dim)


def lora_flops_per_token(adapter: LoraAdapter) -> float:
    """FLOPs per token of one adapter's LoRA products (shrink + expand) on every token."""
    return float(sum(2 * w.a.shape[1] * (w.a.shape[0] + w.b.shape[1]) for w in adapter.modules.values()))


def seq_cls(base: Path, device: str, dtype: torch.dtype):
    """The saved base as a 2-label sequence classifier in ``dtype`` on ``device`` (eval mode)."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2, dtype=dtype)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.to(device).eval()


def peft_p_yes(base: Path, adapter: Path, ids: torch.Tensor, mask: torch.Tensor, device: str,
               dtype: torch.dtype) -> torch.Tensor:
    """PEFT's P(yes) (``PeftModel.from_pretrained``, one adapter) with the base in ``dtype`` on ``device``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(seq_cls(base, device, dtype), str(adapter)).eval()
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return torch.softmax(logits.float(), dim=-1)[:, 1].cpu()


def engine_p_yes(base: Path, adapters: dict[str, Path], ids: torch.Tensor, mask: torch.Tensor, device: str,
                 dtype: torch.dtype) -> torch.Tensor:
    """The engine's P(yes) ``[records, adapters]``, every adapter in one batch, base in ``dtype`` on ``device``."""
    from assay.engine.adapters import load_adapter

    engine = MultiLoraModel(seq_cls(base, device, dtype))
    for qid, path in adapters.items():
        version = AdapterVersion(qid, 1, Path(path), {"threshold": 0.5})
        engine.add(load_adapter(version, head_name=engine.arch.head_name))
    return engine.probabilities(ids, mask).cpu()


def bf16_parity(engine_bf16: torch.Tensor, peft_bf16: torch.Tensor, peft_fp32: torch.Tensor,
                noise: float | None = None) -> dict:
    """The bf16 verdict: the engine in bf16 may be off the fp32 truth by at most 3x PEFT's own bf16 error.

    ``tolerance = 3 noise + 1e-3`` where ``noise`` is PEFT's max |P_bf16 - P_fp32| on this model and these
    records (pass the max over all adapters: one adapter's error depends on where its roundings land). The
    engine rounds at other points than PEFT (fp32 shrink result, fused expand), so it gets a small multiple
    of PEFT's error, plus a floor for the case where that error happens to be ~0.
    """
    own = float((peft_bf16 - peft_fp32).abs().max())
    noise = own if noise is None else noise
    engine_err = float((engine_bf16 - peft_fp32).abs().max())
    tolerance = 3 * noise + 1e-3
    return {"peft_bf16_vs_fp32": own, "bf16_noise": noise, "engine_bf16_vs_peft_fp32": engine_err,
            "engine_bf16_vs_peft_bf16": float((engine_bf16 - peft_bf16).abs().max()), "tolerance": tolerance,
            "pass": engine_err <= tolerance}
