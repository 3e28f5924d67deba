"""Engine = PEFT in bf16 (and fp32) on the GPU, on a small random Llama-shaped classifier.

A random ``LlamaForSequenceClassification`` (hidden 768, 6 layers, GQA; saved, no download) and three real
PEFT adapters with random non-zero LoRA weights and heads (``tests/engine_fixtures.make_adapter``): every
q/v at rank 8; all linears of the top half at rank 16 with an ``alpha_pattern``; gate/down of the last
layer at rank 64 with rsLoRA. Right-padded random token records of uneven length. The engine scores all
three adapters in one batch (Triton kernels on CUDA) with the base in bf16 and in fp32; PEFT scores each
adapter alone, base in bf16 and fp32. Verdicts:

* fp32: the engine within 1e-4 of PEFT (the fp32 Triton path: exact products, fp32 accumulation);
* bf16: the engine within ``3 x (PEFT's own bf16 error, max over the adapters) + 1e-3`` of PEFT fp32
  (``models.bf16_parity``);
* control: an adapter with its LoRA weights zeroed moves P(yes) by more than 10x the bf16 tolerance, so
  an adapter accepted but not applied cannot pass.

    .venv/bin/python bench/gpu/check_parity.py --tiny --out /tmp/gpu-dry     # CPU dry run (hidden 64)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import common
import models
import torch
from engine_fixtures import make_adapter

FP32_TOL = 1e-4
EVERY_LINEAR = list(models.DECODER_TARGETS)


def adapter_specs(layers: int) -> dict[str, tuple]:
    """question id -> (rank, targets, layers_to_transform, LoraConfig options)."""
    return {"all_qv_r8": (8, ["q_proj", "v_proj"], None, {}),
            "top_half_all_r16": (16, EVERY_LINEAR, list(range(layers // 2, layers)), {"alpha_pattern": {"o_proj": 3}}),
            "last_mlp_r64_rslora": (64, ["gate_proj", "down_proj"], [layers - 1], {"use_rslora": True})}


def zeroed_copy(adapter: Path, out: Path) -> Path:
    """The same adapter and head with every LoRA weight zeroed (the control)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, out)
    state = load_file(str(out / "adapter_model.safetensors"))
    save_file({k: torch.zeros_like(v) if ".lora_" in k else v for k, v in state.items()},
              str(out / "adapter_model.safetensors"))
    return out


def build(root: Path, shape: dict) -> tuple[Path, dict[str, Path]]:
    base = models.llama_folder(root / "base", shape)
    specs = adapter_specs(shape["num_hidden_layers"])
    adapters = {qid: make_adapter(base, root / qid, 10 + seed, rank, targets, layers, head="score", **options)
                for seed, (qid, (rank, targets, layers, options)) in enumerate(specs.items())}
    return base, adapters


def parity(base: Path, adapters: dict[str, Path], check: common.Check, vocab: int) -> dict[str, Any]:
    lengths = [12, 3, 30, 7, 1, 64, 40, 2] if not check.tiny else [12, 3, 30, 7, 1]
    ids, mask = models.token_batch(vocab, lengths)
    dev = check.device
    engine = {dt: models.engine_p_yes(base, adapters, ids, mask, dev, dtype)
              for dt, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    refs = {qid: (models.peft_p_yes(base, path, ids, mask, dev, torch.float32),
                  models.peft_p_yes(base, path, ids, mask, dev, torch.bfloat16)) for qid, path in adapters.items()}
    noise = max(float((r16 - r32).abs().max()) for r32, r16 in refs.values())
    per: dict[str, Any] = {}
    ok = True
    for k, (qid, (ref32, ref16)) in enumerate(refs.items()):
        verdict = models.bf16_parity(engine["bf16"][:, k], ref16, ref32, noise)
        verdict["engine_fp32_vs_peft_fp32"] = float((engine["fp32"][:, k] - ref32).abs().max())
        verdict["fp32_pass"] = verdict["engine_fp32_vs_peft_fp32"] <= FP32_TOL
        ok &= verdict["pass"] and verdict["fp32_pass"]
        per[qid] = verdict
    return {"records": len(lengths), "max_length": max(lengths), "fp32_tolerance": FP32_TOL, "adapters": per,
            "pass": bool(ok)}


def control(base: Path, adapters: dict[str, Path], check: common.Check, vocab: int, root: Path,
            tolerance: float) -> dict[str, Any]:
    qid, path = next(iter(adapters.items()))
    ids, mask = models.token_batch(vocab, [12, 3, 30, 7, 1])
    both = {qid: path, "zeroed": zeroed_copy(path, root / "zeroed")}
    p = models.engine_p_yes(base, both, ids, mask, check.device, torch.bfloat16)
    moved = float((p[:, 0] - p[:, 1]).abs().max())
    return {"adapter": qid, "max_abs_dp_zeroed_lora": moved, "needs_more_than": 10 * tolerance,
            "pass": moved > 10 * tolerance}


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args("parity", __doc__, argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    check = common.Check("parity", args)
    shape = models.TINY_LLAMA if args.tiny else models.SMALL_LLAMA
    with tempfile.TemporaryDirectory(prefix="assay-gpu-parity-") as tmp:
        root = Path(tmp)
        built = check.case("build base and PEFT adapters", lambda: dict(zip(("base", "adapters"), build(root, shape))))
        if built:
            result = check.case("engine vs PEFT, bf16 and fp32",
                                lambda: parity(built["base"], built["adapters"], check, shape["vocab_size"]), 10)
            tol = max((v["tolerance"] for v in (result or {}).get("adapters", {}).values()), default=1e-2)
            check.case("control: zeroed LoRA moves P(yes)",
                       lambda: control(built["base"], built["adapters"], check, shape["vocab_size"], root, tol), 5)
    check.finish({"shape": shape, "adapter_specs": {k: list(map(str, v)) for k, v in adapter_specs(
        shape["num_hidden_layers"]).items()}, "fp32_tolerance": FP32_TOL, "allow_tf32": False})


if __name__ == "__main__":
    main()
