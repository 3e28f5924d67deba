"""The engine on a random-weight decoder: throughput, MFU, adapter overhead, shared lower layers.

A random-weight ``MistralForSequenceClassification`` of a named shape (``mistral-7b``: bf16 on a GPU;
``tiny``: a scaled-down Mistral for a CPU smoke run), in-memory adapters of one rank on every linear
layer and fixed-length random token records. In one run: a matmul peak, the base alone, the engine
with full-depth adapters (tokens/s, MFU, adapter overhead against the base on the same rows) and with
adapters on the top quarter of the layers (shared lower layers; records/s against full depth).

    .venv/bin/python bench/engine_decoder.py --device cuda --shape mistral-7b --out bench/results/engine_mistral7b.json
    .venv/bin/python bench/engine_decoder.py --shape tiny --threads 1     # CPU smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import write_result  # noqa: E402

from assay.engine.adapters import LoraAdapter, LoraWeights  # noqa: E402
from assay.engine.model import MultiLoraModel  # noqa: E402
from assay.schemas.registry import AdapterVersion  # noqa: E402

DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {  # MistralConfig fields
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=2, vocab_size=1000),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--adapter-rank", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-records", type=int, default=None,
                   help="records per batch (default: 32 on cuda, 8 on cpu); the engine runs records x adapters rows")
    p.add_argument("--iters", type=int, default=None, help="timed batches (default: 10 on cuda, 3 on cpu)")
    p.add_argument("--out", type=Path, default=None, help="write the result (with provenance) to this JSON file")
    return p.parse_args(argv)


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds one call of ``fn`` takes, the device synchronised before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Best FLOP/s of a square matmul measured now (8192 on cuda, 1024 on cpu)."""
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    return 2 * n**3 / min(timed(lambda: a @ b, device) for _ in range(10))


def random_decoder(shape: str, device: str, dtype: torch.dtype):
    """A random-weight ``MistralForSequenceClassification`` of ``shape`` built on ``device`` (no disk)."""
    from transformers import MistralConfig, MistralForSequenceClassification

    config = MistralConfig(**SHAPES[shape], max_position_embeddings=4096, num_labels=2, pad_token_id=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MistralForSequenceClassification(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def random_adapters(model: MultiLoraModel, count: int, rank: int, layers: range, seed: int = 0) -> list[LoraAdapter]:
    """``count`` in-memory adapters of ``rank`` on every linear layer of ``layers``, random non-zero weights."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    adapters = []
    for i in range(count):
        modules = {}
        for layer in layers:
            for path, linear in model.arch.stages[layer].named_modules():
                if isinstance(linear, torch.nn.Linear) and path.rsplit(".", 1)[-1] in DECODER_TARGETS:
                    a = torch.randn(linear.in_features, rank, generator=g) / math.sqrt(linear.in_features)
                    b = torch.randn(rank, linear.out_features, generator=g) * 0.01
                    modules[f"{model.arch.layers_path}.{layer}.{path}"] = LoraWeights(a=a, b=b, scale=2.0)
        head = {"weight": torch.randn(2, hidden, generator=g) / math.sqrt(hidden)}
        adapters.append(LoraAdapter(AdapterVersion(f"q{i}", 1, Path("."), {}), modules=modules, head=head))
    return adapters


def decoder_flops_per_token(config, seq_len: int) -> float:
    """Forward FLOPs per token of the base: 2 x linear weights + attention scores and values (4 x T x d per layer)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d, f, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * head_dim
    linear = d * d * 2 + d * kv * 2 + 3 * d * f  # q, o; k, v; gate, up, down
    return config.num_hidden_layers * (2 * linear + 4 * seq_len * d)


def bench_decoder(args: argparse.Namespace) -> dict:
    """Every figure of one run (see the module docstring)."""
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    on_gpu = device == "cuda"
    batch, iters = args.batch_records or (32 if on_gpu else 8), args.iters or (10 if on_gpu else 3)
    k, seq = args.adapters, args.seq_len
    peak = matmul_peak(device, dtype)
    model = MultiLoraModel(random_decoder(args.shape, device, dtype))
    config, n_layers = model.config, model.arch.n_layers
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (batch, seq), generator=g).to(device)
    mask = torch.ones_like(ids)
    many_ids, many_mask = ids.repeat(k, 1), mask.repeat(k, 1)

    def measure(fn: Callable[[], object], label: str) -> float:
        fn()  # warm-up (compiles the Triton kernels on the first call)
        return float(np.median([timed(fn, device) for _ in tqdm(range(iters), desc=label, leave=False)]))

    with torch.inference_mode():
        base_s = measure(lambda: model.arch.inner(input_ids=many_ids, attention_mask=many_mask, use_cache=False),
                         f"base alone, {k * batch} rows")
        full = random_adapters(model, k, args.adapter_rank, range(n_layers))
        top = random_adapters(model, k, args.adapter_rank, range(n_layers - n_layers // 4, n_layers), seed=1)
        for adapter in full:  # (both sets built before any is added: adding wraps the linear layers)
            model.add(adapter)
        model.pooled_only = False  # the same work as the base alone, plus LoRA: the adapter overhead
        same_work_s = measure(lambda: model.probabilities(ids, mask), f"{k} full-depth adapters, whole last layer")
        model.pooled_only = True
        full_s = measure(lambda: model.probabilities(ids, mask), f"{k} full-depth adapters")
        for adapter in top:
            model.add(adapter)  # same question ids: replaces the full-depth ones
        top_fan = model.fan_stage
        top_s = measure(lambda: model.probabilities(ids, mask), f"{k} top-quarter adapters")
    tokens = k * batch * seq
    flops = decoder_flops_per_token(config, seq) * tokens
    result = {
        "shape": args.shape, "device": torch.cuda.get_device_name() if on_gpu else "cpu", "dtype": str(dtype),
        "layers": n_layers, "adapters": k, "rank": args.adapter_rank, "seq_len": seq, "batch_records": batch,
        "iters": iters, "matmul_peak_tflops": peak / 1e12,
        "base_tokens_per_s": tokens / base_s, "base_mfu": flops / base_s / peak,
        "full_tokens_per_s": tokens / full_s, "full_mfu": flops / same_work_s / peak,
        "full_records_per_s": batch / full_s, "adapter_overhead": same_work_s / base_s - 1,
        "top_quarter_first_adapted_layer": top_fan, "top_records_per_s": batch / top_s,
        "top_vs_full": full_s / top_s,
    }
    if on_gpu:
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def report(r: dict) -> str:
    """The run as a short Markdown table."""
    lines = [
        f"random-weight {r['shape']} ({r['layers']} layers), {r['device']} {r['dtype']}, {r['adapters']} adapters "
        f"rank {r['rank']}, {r['batch_records']} records x {r['seq_len']} tokens per batch; "
        f"matmul peak {r['matmul_peak_tflops']:.2f} TFLOP/s", "",
        "| mode | throughput | notes |", "|---|---:|---|",
        f"| base alone (records x adapters rows) | {r['base_tokens_per_s']:,.0f} tok/s | MFU {r['base_mfu']:.1%} |",
        f"| {r['adapters']} full-depth adapters | {r['full_tokens_per_s']:,.0f} tok/s | MFU {r['full_mfu']:.1%} "
        "(measured with the whole last layer, like the base) |",
        f"| adapter overhead | {r['adapter_overhead']:+.1%} | engine with whole last layer vs base alone, same rows |",
        f"| full depth | {r['full_records_per_s']:,.1f} rec/s | |",
        f"| top quarter (shared layers 0-{r['top_quarter_first_adapted_layer'] - 1}) | "
        f"{r['top_records_per_s']:,.1f} rec/s | {r['top_vs_full']:.2f}x full depth |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.shape == "mistral-7b" and args.device != "cuda":
        raise SystemExit("--shape mistral-7b needs --device cuda (use --shape tiny on CPU)")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_decoder(args)
    print(report(result))
    if args.out:
        write_result(args.out, {**vars(args), "torch_threads": torch.get_num_threads(), "lora_scale": 2.0,
                                "targets": DECODER_TARGETS, "shape_config": SHAPES[args.shape]}, result)
    return result


if __name__ == "__main__":
    main()
