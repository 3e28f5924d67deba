"""QLoRA: 20 training steps on a bitsandbytes 4-bit (NF4) base, the adapter saved, loaded by the engine.

A random ``LlamaForSequenceClassification`` built from a config (hidden 512, 4 layers; saved, no download)
is loaded the way ``assay train`` loads a large base on CUDA: ``assay.distill.base.load_base`` with
``TrainConfig(quantize_4bit=True)`` (NF4, double quantisation, bf16 compute, then
``prepare_model_for_kbit_training``), LoRA placed by ``lora_config`` (top 2 layers, rank 8, head trained in
full). 20 AdamW steps of the distillation loss (``distill_loss``, soft targets) on one fixed batch of 32
records: the loss must go down (last 5 steps' mean below the first 5's, last below first). The adapter
is saved with ``save_pretrained`` (PEFT format), loaded by the engine (``load_adapter`` into a bf16
``MultiLoraModel`` of the unquantised base, as ``assay score`` runs it) and its P(yes) compared with
PEFT's on the same unquantised base (``models.bf16_parity``). The 4-bit model's own P(yes) is reported
too (what quantisation moves; not a pass criterion: the engine scores on the bf16 base).

With ``--tiny`` (CPU) bitsandbytes 4-bit cannot run (``load_base`` puts it on CUDA device 0): the same
steps run on the fp32 base, and the 4-bit path is exercised up to the ``BitsAndBytesConfig``.

    .venv/bin/python bench/gpu/check_qlora.py --tiny --out /tmp/gpu-dry
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import common
import models
import torch

from assay.distill.base import TrainConfig, load_base, lora_config, quantization_config
from assay.distill.train import distill_loss

QLORA_LLAMA = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=4, vocab_size=2048)
STEPS = 20


def quant_path() -> dict[str, Any]:
    """The 4-bit configuration ``assay train`` uses on CUDA (built on any machine) and bitsandbytes' presence."""
    quant = quantization_config(TrainConfig(device="cuda", quantize_4bit=True))
    import bitsandbytes

    return {"quant_type": quant.bnb_4bit_quant_type, "double_quant": quant.bnb_4bit_use_double_quant,
            "compute_dtype": str(quant.bnb_4bit_compute_dtype), "load_in_4bit": quant.load_in_4bit,
            "bitsandbytes": bitsandbytes.__version__}


def data(vocab: int, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random records of 8-32 tokens; soft target P(yes) from the parity of their first token (learnable)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(v) for v in torch.randint(8, 33, (n,), generator=g)]
    ids, mask = models.token_batch(vocab, lengths, seed)
    target = torch.where(ids[:, 0] % 2 == 0, 0.9, 0.1)
    return ids, mask, target


def train(root: Path, check: common.Check) -> dict[str, Any]:
    """20 steps on the (4-bit on CUDA) base; saves the adapter to ``root/adapter``."""
    from peft import get_peft_model

    config = TrainConfig(device=check.device, quantize_4bit=not check.tiny, lora_rank=8, top_layers=2)
    model = load_base(root / "base", config)
    linear4 = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    peft_model = get_peft_model(model, lora_config(model, config))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    vocab = (models.TINY_LLAMA if check.tiny else QLORA_LLAMA)["vocab_size"]
    ids, mask, target = data(vocab)
    ids, mask, target = ids.to(check.device), mask.to(check.device), target.to(check.device)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    peft_model.train()
    losses = []
    for _ in range(STEPS):
        loss = distill_loss(peft_model(input_ids=ids, attention_mask=mask).logits, target, (1.0, 1.0), "soft")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    peft_model.eval()
    peft_model.save_pretrained(str(root / "adapter"))
    test_ids, test_mask = models.token_batch(vocab, [5, 17, 30, 9, 2, 24], seed=7)
    with torch.inference_mode():
        logits = peft_model(input_ids=test_ids.to(check.device), attention_mask=test_mask.to(check.device)).logits
    torch.save({"ids": test_ids, "mask": test_mask, "p_4bit": torch.softmax(logits.float(), -1)[:, 1].cpu()},
               root / "test.pt")
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    return {"quantized_4bit": config.quantize_4bit, "linear4bit_modules": linear4, "trainable_parameters": trainable,
            "learning_rate": config.learning_rate, "steps": STEPS, "losses": losses, "first5_mean": first,
            "last5_mean": last, "pass": last < first and losses[-1] < losses[0]
            and (linear4 > 0 or not config.quantize_4bit)}


def round_trip(root: Path, check: common.Check) -> dict[str, Any]:
    """The saved adapter: PEFT format, loaded by the engine, P(yes) against PEFT's (bf16 verdict)."""
    adapter, base = root / "adapter", root / "base"
    config = json.loads((adapter / "adapter_config.json").read_text())
    test = torch.load(root / "test.pt")
    ids, mask = test["ids"], test["mask"]
    engine = models.engine_p_yes(base, {"qlora": adapter}, ids, mask, check.device, torch.bfloat16)[:, 0]
    ref32 = models.peft_p_yes(base, adapter, ids, mask, check.device, torch.float32)
    ref16 = models.peft_p_yes(base, adapter, ids, mask, check.device, torch.bfloat16)
    verdict = models.bf16_parity(engine, ref16, ref32)
    return {"peft_files": sorted(p.name for p in adapter.iterdir()), "peft_type": config.get("peft_type"),
            "target_modules": sorted(config.get("target_modules") or []),
            "layers_to_transform": config.get("layers_to_transform"), **verdict,
            "p_4bit_model_vs_engine_bf16": float((test["p_4bit"] - engine).abs().max()),
            "pass": verdict["pass"] and config.get("peft_type") == "LORA"}


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args("qlora", __doc__, argv)
    check = common.Check("qlora", args)
    shape = models.TINY_LLAMA if args.tiny else QLORA_LLAMA
    check.case("4-bit config and bitsandbytes", quant_path)
    with tempfile.TemporaryDirectory(prefix="assay-gpu-qlora-") as tmp:
        root = Path(tmp)
        models.llama_folder(root / "base", shape)
        trained = check.case(f"{STEPS} training steps" + ("" if args.tiny else " on the 4-bit base"),
                             lambda: train(root, check), 10)
        if trained:
            check.case("saved adapter: PEFT format, engine = PEFT", lambda: round_trip(root, check), 5)
    check.finish({"shape": shape, "steps": STEPS, "batch": 32, "lora_rank": 8, "top_layers": 2, "loss": "soft",
                  "class_weights": [1.0, 1.0]})


if __name__ == "__main__":
    main()
