"""The multi-LoRA engine on a Mistral-7B-shaped model (random weights from the config, bf16, on the GPU).

In one process, on the same random token records (``--records`` x ``--seq-len``, no padding):

* the GPU's bf16 matmul peak, measured now (8192^3, best of 10) — the MFU denominator;
* the base alone on ``K x records`` rows (the floor), for each adapter count K (``--adapters``, 8 32);
* PEFT's mixed-adapter batch (``adapter_names=``, each record repeated per adapter) with K full-depth
  rank-16 adapters on every linear (``--peft-adapters``), and the engine's P(yes) against PEFT's with the
  very same adapter weights (bf16 both);
* the engine with K random full-depth adapters: with the whole last layer (the same rows and work as the
  base alone plus LoRA: the LoRA overhead, and MFU = counted FLOPs / time / peak) and as it runs by
  default (last layer at the pooled token only): records x questions / s;
* 8 adapters on the top quarter of the layers with shared lower layers on and off (the speed-up);
* the SGMV/BGMV dispatch inside the engine: one record (the pooled last-layer rows are 1 per adapter:
  BGMV) and a batch (SGMV only), counted, and the one record's P(yes) alone vs inside the batch;
* memory: ``torch.cuda.max_memory_allocated`` per case.

    bench/gpu/run.sh                                      # all checks
    .venv/bin/python bench/gpu/check_engine.py --tiny --out /tmp/gpu-dry     # CPU dry run, tiny Mistral
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any

import common
import models
import torch
from check_kernels import counted_kernels

from assay.engine.model import MultiLoraModel

COARSE_P_TOL = 0.05  # |dP| bound across 32 bf16 layers when two computations differ only in rounding order


def extra_args(p) -> None:
    p.add_argument("--adapters", type=int, nargs="+", default=[8, 32])
    p.add_argument("--peft-adapters", type=int, nargs="+", default=[8])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--records", type=int, default=None, help="default: 8 on cuda, 2 with --tiny")
    p.add_argument("--seq-len", type=int, default=None, help="default: 256 on cuda, 16 with --tiny")
    p.add_argument("--iters", type=int, default=None, help="timed calls per figure (default: 3 on cuda, 1 on cpu)")


class Bench:
    """The model, the records and the measurements shared by the cases."""

    def __init__(self, check: common.Check) -> None:
        args = check.args
        self.check, self.device = check, check.device
        self.dtype = torch.float32 if check.tiny else torch.bfloat16
        self.records = args.records or (2 if check.tiny else 8)
        self.seq = args.seq_len or (16 if check.tiny else 256)
        self.iters = args.iters or (1 if check.tiny else 3)
        self.shape = models.TINY_MISTRAL if check.tiny else models.MISTRAL_7B
        self.peak = self.model = self.mlm = None
        self.base_s: dict[int, float] = {}
        self.peft: dict[int, dict[str, Any]] = {}

    def seconds(self, fn) -> float:
        return common.time_ms(fn, self.device, warmup=1, iters=self.iters)["median_ms"] / 1e3

    def inputs(self, records: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, self.shape["vocab_size"], (records or self.records, self.seq), generator=g)
        return ids.to(self.device), torch.ones_like(ids).to(self.device)

    def tokens_flops(self, rows: int) -> float:
        return models.decoder_flops_per_token(self.model.config, self.seq) * rows * self.seq


def peak_matmul(b: Bench) -> dict[str, Any]:
    n = 512 if b.check.tiny else 8192
    x, y = (torch.randn(n, n, device=b.device, dtype=b.dtype) for _ in range(2))
    timing = common.time_ms(lambda: x @ y, b.device, warmup=3, iters=10)
    b.peak = 2 * n**3 / (timing["min_ms"] / 1e3)
    return {"n": n, "dtype": str(b.dtype), "peak_tflops": b.peak / 1e12,
            "median_tflops": 2 * n**3 / (timing["median_ms"] / 1e3) / 1e12}


def build(b: Bench) -> dict[str, Any]:
    b.model = models.random_decoder(b.shape, b.device, b.dtype)
    params = sum(p.numel() for p in b.model.parameters())
    return {"shape": b.shape, "parameters": params, "dtype": str(b.dtype)}


@torch.inference_mode()
def base_alone(b: Bench, counts: list[int]) -> dict[str, Any]:
    ids, mask = b.inputs()
    out = {}
    for k in counts:
        many_ids, many_mask = ids.repeat(k, 1), mask.repeat(k, 1)
        b.base_s[k] = b.seconds(lambda many_ids=many_ids, many_mask=many_mask: b.model.model(
            input_ids=many_ids, attention_mask=many_mask, use_cache=False))
        out[f"rows_{k}x"] = {"seconds": b.base_s[k], "tokens_per_s": k * b.records * b.seq / b.base_s[k],
                             "mfu": b.tokens_flops(k * b.records) / b.base_s[k] / b.peak}
    return out


def peft_adapters_of(peft_model, names: list[str]) -> list:
    """The PEFT model's adapters as engine ``LoraAdapter`` objects (the same tensors, A/B transposed)."""
    from pathlib import Path

    from peft.tuners.lora import LoraLayer

    from assay.engine.adapters import LoraAdapter, LoraWeights
    from assay.schemas.registry import AdapterVersion

    per: dict[str, dict] = {name: {} for name in names}
    for path, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            for name in names:
                per[name][path] = LoraWeights(a=module.lora_A[name].weight.detach().T.contiguous(),
                                              b=module.lora_B[name].weight.detach().T.contiguous(),
                                              scale=float(module.scaling[name]))
    heads = peft_model.base_model.model.score.modules_to_save
    return [LoraAdapter(source=AdapterVersion(name, 1, Path("."), {"threshold": 0.5}), modules=per[name],
                        head={"weight": heads[name].weight.detach().clone()}) for name in names]


def peft_mixed(b: Bench, k: int) -> dict[str, Any]:
    """PEFT's mixed batch with ``k`` full-depth adapters; leaves the base unwrapped again."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=b.check.args.rank, lora_alpha=2 * b.check.args.rank,
                        lora_dropout=0.0, target_modules=list(models.DECODER_TARGETS))
    names = [f"peft{i}" for i in range(k)]
    with torch.device(b.device):  # PEFT creates its LoRA layers on the default device, then moves them
        peft_model = get_peft_model(b.model, config, adapter_name=names[0])
        for name in names[1:]:
            peft_model.add_adapter(name, config)
    g = torch.Generator(device=b.device).manual_seed(k)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g, device=b.device, dtype=param.dtype) * 0.01)
            elif "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=g, device=b.device, dtype=param.dtype)
                            / b.model.config.hidden_size**0.5)
    peft_model.eval()
    ids, mask = b.inputs()
    rows = [name for name in names for _ in range(b.records)]  # adapter-major, like the engine
    with torch.inference_mode():
        def call():
            return peft_model(input_ids=ids.repeat(k, 1), attention_mask=mask.repeat(k, 1), adapter_names=rows).logits
        seconds = b.seconds(call)
        p_yes = torch.softmax(call().float(), -1)[:, 1].view(k, b.records).T.cpu()
    b.peft[k] = {"adapters": peft_adapters_of(peft_model, names), "p_yes": p_yes, "seconds": seconds}
    b.model = peft_model.unload()
    return {"adapters": k, "call_seconds": seconds, "records_x_questions_per_s": k * b.records / seconds}


@torch.inference_mode()
def engine_vs_peft(b: Bench, k: int) -> dict[str, Any]:
    ids, mask = b.inputs()
    for adapter in b.peft[k]["adapters"]:
        b.mlm.add(adapter)
    got = b.mlm.probabilities(ids, mask).cpu()
    seconds = b.seconds(lambda: b.mlm.probabilities(ids, mask))
    for adapter in b.peft[k]["adapters"]:
        b.mlm.remove(adapter.question_id)
    ref = b.peft[k]["p_yes"]
    diff = float((got - ref).abs().max())
    return {"adapters": k, "max_abs_dp": diff, "tolerance": COARSE_P_TOL, "pass": diff <= COARSE_P_TOL,
            "p_yes_spread": float((ref - 0.5).abs().mean()), "engine_seconds": seconds,
            "engine_vs_peft_speedup": b.peft[k]["seconds"] / seconds}


@torch.inference_mode()
def engine_full_depth(b: Bench, k: int) -> dict[str, Any]:
    ids, mask = b.inputs()
    adapters = models.random_adapters(b.mlm, k, b.check.args.rank, range(b.mlm.arch.n_layers), seed=k)
    for adapter in adapters:
        b.mlm.add(adapter)
    b.mlm.pooled_only = False  # same rows and work as the base alone, plus LoRA
    same_s = b.seconds(lambda: b.mlm.probabilities(ids, mask))
    b.mlm.pooled_only = True
    default_s = b.seconds(lambda: b.mlm.probabilities(ids, mask))
    for adapter in adapters:
        b.mlm.remove(adapter.question_id)
    lora = sum(models.lora_flops_per_token(a) for a in adapters) * b.records * b.seq
    flops = b.tokens_flops(k * b.records) + lora
    overhead = same_s / b.base_s[k] - 1
    result = {"adapters": k, "rank": b.check.args.rank, "same_work_seconds": same_s, "default_seconds": default_s,
              "lora_overhead": overhead, "mfu": flops / same_s / b.peak, "lora_flops_share": lora / flops,
              "records_x_questions_per_s": k * b.records / default_s,
              "base_records_per_s": b.records / (b.base_s[k] / k)}
    if k == 8:
        result["goal_overhead_le_5pct"] = overhead <= 0.05
        result["goal_mfu_ge_60pct"] = result["mfu"] >= 0.60
    return result


@torch.inference_mode()
def shared_lower(b: Bench, k: int = 8) -> dict[str, Any]:
    ids, mask = b.inputs()
    n = b.mlm.arch.n_layers
    for adapter in models.random_adapters(b.mlm, k, b.check.args.rank, range(n - n // 4, n), seed=100):
        b.mlm.add(adapter)  # kept loaded for the dispatch case
    b.mlm.share_lower = True
    shared_s = b.seconds(lambda: b.mlm.probabilities(ids, mask))
    fan = b.mlm.fan_stage
    b.mlm.share_lower = False
    unshared_s = b.seconds(lambda: b.mlm.probabilities(ids, mask))
    b.mlm.share_lower = True
    speedup = unshared_s / shared_s
    return {"adapters": k, "first_adapted_layer": fan, "layers": n, "shared_seconds": shared_s,
            "unshared_seconds": unshared_s, "records_x_questions_per_s": k * b.records / shared_s,
            "speedup": speedup, "ideal_speedup": n * k / (fan + (n - fan) * k), "goal_speedup_ge_2_5": speedup >= 2.5}


@contextmanager
def triton_in_engine(interpret: bool):
    """On CPU (--tiny) the engine's default backend is torch; name Triton (interpreted) so the dispatch runs."""
    from assay.engine import multilora

    original = multilora.segmented_lora
    if interpret:
        multilora.segmented_lora = functools.partial(original, backend="triton")
    try:
        yield
    finally:
        multilora.segmented_lora = original


@torch.inference_mode()
def engine_dispatch(b: Bench) -> dict[str, Any]:
    ids, mask = b.inputs(max(b.records, 4))
    with triton_in_engine(b.check.tiny):
        with counted_kernels() as one:
            alone = b.mlm.probabilities(ids[:1], mask[:1]).cpu()
        with counted_kernels() as many:
            batch = b.mlm.probabilities(ids, mask).cpu()
    diff = float((alone[0] - batch[0]).abs().max())
    ok = one["bgmv"] > 0 and one["sgmv"] > 0 and many["bgmv"] == 0 and many["sgmv"] > 0 and diff <= COARSE_P_TOL
    return {"one_record_kernel_calls": dict(one), "batch_kernel_calls": dict(many), "batch_records": ids.shape[0],
            "max_abs_dp_alone_vs_in_batch": diff, "tolerance": COARSE_P_TOL, "pass": bool(ok)}


def guarded(check: common.Check, label: str, fn, needs_s: float) -> None:
    """A case that also records its peak GPU memory."""
    def run():
        if check.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = fn()
        if check.device == "cuda":
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return result
    check.case(label, run, needs_s=needs_s)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args("engine", __doc__, argv, extra_args)
    check = common.Check("engine", args)
    b = Bench(check)
    guarded(check, "matmul peak", lambda: peak_matmul(b), 0)
    guarded(check, "build the random model", lambda: build(b), 0)
    if b.model is None or b.peak is None:
        check.finish({"shape": b.shape})
        return
    guarded(check, "base alone", lambda: base_alone(b, args.adapters), 10)
    for k in args.peft_adapters:
        guarded(check, f"PEFT mixed batch, {k} adapters", lambda k=k: peft_mixed(b, k), 30)
    b.mlm = MultiLoraModel(b.model, share_lower=True)
    for k in b.peft:
        label = f"engine = PEFT, {k} adapters ({str(b.dtype).split('.')[-1]})"
        guarded(check, label, lambda k=k: engine_vs_peft(b, k), 10)
    b.peft.clear()
    for k in args.adapters:
        if k in b.base_s:
            guarded(check, f"engine, {k} full-depth adapters", lambda k=k: engine_full_depth(b, k), 20)
    guarded(check, "shared lower layers, 8 top-quarter adapters", lambda: shared_lower(b), 15)
    guarded(check, "SGMV/BGMV dispatch in the engine", lambda: engine_dispatch(b), 5)
    check.finish({"shape": b.shape, "records": b.records, "seq_len": b.seq, "iters": b.iters, "dtype": str(b.dtype),
                  "targets": list(models.DECODER_TARGETS), "lora_scale": 2.0, "lora_b_std": 0.01,
                  "coarse_p_tol": COARSE_P_TOL})


if __name__ == "__main__":
    main()
