"""Benchmark the multi-LoRA batch engine.

Two benchmarks, picked by ``--shape``:

* ``--shape minilm`` (default): the bundled MiniLM base, 7 real PEFT adapters (one per Jigsaw
  question) and 2,000 bundled records from ``examples/data/jigsaw/train.parquet``. In one run it
  times the engine on the ``assay score`` path (``Scorer.from_registry`` + ``score_files``: Parquet
  in, Parquet out) side by side with (a) a plain PEFT loop that sets each adapter in turn and scores
  every record and (b) PEFT's mixed-adapter batch (``adapter_names=``), for adapters on the top
  layer of 6 (what distillation produces by default), the top 2 or all layers. Throughput is
  records x questions per second; the three methods' P(yes) are compared to make sure they
  computed the same thing.

* ``--shape mistral-7b`` / ``--shape tiny``: a random-weight decoder of that shape (``tiny`` is a
  scaled-down Mistral for a CPU smoke run), 8 adapters of rank 16 on every linear layer and
  fixed-length token records. It measures a matmul peak in the same run, the base model alone,
  the engine with full-depth adapters (tokens/s, MFU, adapter overhead against the base on the
  same number of rows) and with adapters on the top quarter of the layers (shared lower layers;
  records/s against full depth).

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_engine.py
    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_engine.py --shape tiny
    .venv/bin/python bench/bench_engine.py --device cuda --shape mistral-7b
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the PEFT adapter builders the engine tests use

from engine_fixtures import make_adapter, minilm, publish  # noqa: E402

from assay.schemas.registry import AdapterVersion, Registry  # noqa: E402
from assay.engine.adapters import LoraAdapter, LoraWeights  # noqa: E402
from assay.engine.model import MultiLoraModel  # noqa: E402
from assay.engine.run import score_files  # noqa: E402
from assay.engine.scorer import Scorer  # noqa: E402

RECORDS = ROOT / "examples" / "data" / "jigsaw" / "train.parquet"
QUESTIONS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate", "is_bad")
BERT_TARGETS = ["query", "key", "value", "dense"]
DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {  # MistralConfig fields
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=2, vocab_size=1000),
}
console = Console()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["minilm", *SHAPES], default="minilm")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    g = p.add_argument_group("--shape minilm")
    g.add_argument("--records", type=int, default=2000)
    g.add_argument("--max-length", type=int, default=128, help="token limit (the adapters' training length)")
    g.add_argument("--rank", type=int, default=8)
    g.add_argument("--depths", nargs="+", choices=list(DEPTHS), default=["top1", "full"])
    g.add_argument("--batch-tokens", type=int, default=16_384, help="engine token budget (assay score default)")
    g.add_argument("--peft-batch", type=int, default=32, help="records per forward pass of the PEFT baselines")
    g.add_argument("--skip-peft", action="store_true", help="time the engine only")
    g = p.add_argument_group("--shape mistral-7b / tiny")
    g.add_argument("--adapters", type=int, default=8)
    g.add_argument("--adapter-rank", type=int, default=16)
    g.add_argument("--seq-len", type=int, default=256)
    g.add_argument("--batch-records", type=int, default=None,
                   help="records per batch (default: 32 on cuda, 8 on cpu); the engine runs records x adapters rows")
    g.add_argument("--iters", type=int, default=None, help="timed batches (default: 10 on cuda, 3 on cpu)")
    return p.parse_args()


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device | str) -> tuple[float, object]:
    """Seconds one call of ``fn`` takes (device synchronised before and after), and what it returned."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------------------------------
# MiniLM: the engine against PEFT


DEPTHS = {"top1": ([5], "top layer of 6 (distillation's default)"), "top2": ([4, 5], "top 2 of 6 layers"),
          "full": (None, "all 6 layers")}  # --depths: layers_to_transform and the report's label


def build_registry(root: Path, base: Path, depth: str, rank: int, max_length: int) -> Registry:
    """7 PEFT adapters with random non-zero weights, saved and promoted in a real registry."""
    layers = DEPTHS[depth][0]
    for seed, qid in enumerate(QUESTIONS):
        adapter = make_adapter(base, root / "adapters" / qid, seed=seed, rank=rank, target_modules=BERT_TARGETS,
                               layers_to_transform=layers)
        publish(root / "registry", qid, 1, adapter, base, max_length=max_length)
    return Registry(root / "registry")


def peft_model(base: Path, registry: Registry, device: str):
    """The base with every adapter loaded into one PeftModel (adapter names = question ids)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2, dtype=dtype)
    versions = [registry.current(qid) for qid in QUESTIONS]
    peft = PeftModel.from_pretrained(model, str(versions[0].path), adapter_name=QUESTIONS[0])
    for qid, version in zip(QUESTIONS[1:], versions[1:]):
        peft.load_adapter(str(version.path), adapter_name=qid)
    return peft.to(device).eval()


def input_batches(base: Path, texts: list[str], size: int, max_length: int, device: str) -> list[dict]:
    """Batches in input order, padded to their longest record (what a plain loop does); tokenised once."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return [tokenizer(texts[i:i + size], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt").to(device) for i in range(0, len(texts), size)]


@torch.inference_mode()
def peft_loop(peft, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """(a) Set each adapter in turn and score every record with it."""
    columns = []
    for qid in tqdm(QUESTIONS, desc="PEFT loop", unit="adapter", leave=False):
        peft.set_adapter(qid)
        columns.append(torch.cat([torch.softmax(peft(**batch).logits.float(), -1)[:, 1] for batch in batches]))
    return torch.stack(columns, 1).cpu().numpy()


@torch.inference_mode()
def peft_mixed(peft, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """(b) PEFT's mixed-adapter batch: each record repeated once per adapter, ``adapter_names=`` per row."""
    rows = []
    for batch in tqdm(batches, desc="PEFT mixed batch", unit="batch", leave=False):
        n = batch["input_ids"].shape[0]
        names = [qid for qid in QUESTIONS for _ in range(n)]
        repeated = {key: value.repeat(len(QUESTIONS), 1) for key, value in batch.items()}
        p = torch.softmax(peft(**repeated, adapter_names=names).logits.float(), -1)[:, 1]
        rows.append(p.view(len(QUESTIONS), n).T)
    return torch.cat(rows).cpu().numpy()


def bench_minilm(args: argparse.Namespace) -> list[dict]:
    base = minilm()
    records = pq.read_table(RECORDS, columns=["id", "text"]).slice(0, args.records)
    texts = records.column("text").to_pylist()
    n, k = records.num_rows, len(QUESTIONS)
    results = []
    for depth in args.depths:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            pq.write_table(records, root / "records.parquet")
            registry = build_registry(root, base, depth, args.rank, args.max_length)
            load_s, scorer = timed(lambda: Scorer.from_registry(registry, device=args.device,
                                                                batch_tokens=args.batch_tokens), args.device)
            scorer.score_texts(texts[:16])  # warm-up
            scorer.model.pooled_only = False  # before the last-layer optimisation, for the record
            before_s, _ = timed(lambda: score_files(scorer, root / "records.parquet", root / "before"), args.device)
            scorer.model.pooled_only = True
            engine_s, summary = timed(lambda: score_files(scorer, root / "records.parquet", root / "scored"),
                                      args.device)
            scored = pa.concat_tables(pq.read_table(f) for f in sorted((root / "scored").glob("part-*.parquet")))
            engine_p = np.stack([scored.sort_by("id").column(f"{q}_p").to_numpy() for q in QUESTIONS], 1)
            by_id = np.argsort(records.column("id").to_numpy(zero_copy_only=False), kind="stable")
            row = {"depth": depth, "records": n, "questions": k, "engine_s": engine_s, "engine_load_s": load_s,
                   "engine_whole_last_layer_s": before_s, "engine_whole_last_layer_rqps": n * k / before_s,
                   "fan_stage": scorer.model.fan_stage, "truncated": summary.truncated,
                   "engine_rqps": n * k / engine_s}
            del scorer
            if not args.skip_peft:
                peft = peft_model(base, registry, args.device)
                batches = input_batches(base, texts, args.peft_batch, args.max_length, args.device)
                with torch.inference_mode():
                    peft(**batches[0])  # warm-up
                row["loop_s"], loop_p = timed(lambda: peft_loop(peft, batches), args.device)
                row["mixed_s"], mixed_p = timed(lambda: peft_mixed(peft, batches), args.device)
                row["loop_rqps"], row["mixed_rqps"] = n * k / row["loop_s"], n * k / row["mixed_s"]
                row["vs_loop"], row["vs_mixed"] = row["loop_s"] / engine_s, row["mixed_s"] / engine_s
                row["max_abs_diff_loop"] = float(np.abs(engine_p - loop_p[by_id]).max())
                row["max_abs_diff_mixed"] = float(np.abs(engine_p - mixed_p[by_id]).max())
                del peft
            results.append(row)
            console.print(row)
    return results


def report_minilm(args: argparse.Namespace, results: list[dict]) -> None:
    title = (f"MiniLM, {results[0]['records']:,} Jigsaw records x {results[0]['questions']} adapters (rank "
             f"{args.rank}), max_length {args.max_length}, {args.device}, torch threads {torch.get_num_threads()}")
    headers = ["adapters", "engine rec×q/s", "(whole last layer)", "PEFT loop rec×q/s", "PEFT mixed rec×q/s",
               "vs loop", "vs mixed", "engine s", "loop s", "mixed s", "max |ΔP|"]
    lines = []
    for r in results:
        depth = DEPTHS[r["depth"]][1]
        if "loop_s" in r:
            lines.append([depth, f"{r['engine_rqps']:,.0f}", f"{r['engine_whole_last_layer_rqps']:,.0f}",
                          f"{r['loop_rqps']:,.0f}", f"{r['mixed_rqps']:,.0f}",
                          f"{r['vs_loop']:.2f}×", f"{r['vs_mixed']:.2f}×", f"{r['engine_s']:.1f}",
                          f"{r['loop_s']:.1f}", f"{r['mixed_s']:.1f}",
                          f"{max(r['max_abs_diff_loop'], r['max_abs_diff_mixed']):.1e}"])
        else:
            lines.append([depth, f"{r['engine_rqps']:,.0f}", f"{r['engine_whole_last_layer_rqps']:,.0f}", "-", "-",
                          "-", "-", f"{r['engine_s']:.1f}", "-", "-", "-"])
    print_table(title, headers, lines)


# ---------------------------------------------------------------------------------------------
# Random-weight decoder: throughput, MFU, adapter overhead, shared lower layers


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Best FLOP/s of a square matmul measured now (8192 on cuda, 1024 on cpu)."""
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b, device)[0] for _ in range(10))
    return 2 * n**3 / best


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
        times = [timed(fn, device)[0] for _ in tqdm(range(iters), desc=label, leave=False)]
        return float(np.median(times))

    with torch.inference_mode():
        base_s = measure(lambda: model.arch.inner(input_ids=many_ids, attention_mask=many_mask, use_cache=False),
                         f"base alone, {k * batch} rows")
        full = random_adapters(model, k, args.adapter_rank, range(n_layers))
        top = random_adapters(model, k, args.adapter_rank, range(n_layers - n_layers // 4, n_layers), seed=1)
        for adapter in full:
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
        "matmul_peak_tflops": peak / 1e12,
        "base_tokens_per_s": tokens / base_s, "base_mfu": flops / base_s / peak,
        "full_tokens_per_s": tokens / full_s, "full_mfu": flops / same_work_s / peak,
        "full_records_per_s": batch / full_s, "adapter_overhead": same_work_s / base_s - 1,
        "top_quarter_first_adapted_layer": top_fan, "top_records_per_s": batch / top_s,
        "top_vs_full": full_s / top_s,
    }
    return result


def report_decoder(result: dict) -> None:
    r = result
    title = (f"random-weight {r['shape']} ({r['layers']} layers), {r['device']} {r['dtype']}, {r['adapters']} adapters "
             f"rank {r['rank']}, {r['batch_records']} records x {r['seq_len']} tokens per batch; "
             f"matmul peak {r['matmul_peak_tflops']:.2f} TFLOP/s")
    lines = [
        ["base alone (records x adapters rows)", f"{r['base_tokens_per_s']:,.0f} tok/s", f"MFU {r['base_mfu']:.1%}"],
        [f"{r['adapters']} full-depth adapters", f"{r['full_tokens_per_s']:,.0f} tok/s",
         f"MFU {r['full_mfu']:.1%} (measured with the whole last layer, like the base)"],
        ["adapter overhead", f"{r['adapter_overhead']:+.1%}",
         "engine with whole last layer vs base alone on the same rows (target ≤ 5%)"],
        ["full depth", f"{r['full_records_per_s']:,.1f} rec/s", ""],
        [f"top quarter (shared layers 0-{r['top_quarter_first_adapted_layer'] - 1})",
         f"{r['top_records_per_s']:,.1f} rec/s", f"{r['top_vs_full']:.2f}× full depth (target ≥ 2.5×)"],
    ]
    print_table(title, ["mode", "throughput", "notes"], lines)


def print_table(title: str, headers: list[str], lines: list[list[str]]) -> None:
    """Print a rich table and the same as Markdown (for docs/PERFORMANCE.md)."""
    table = Table(*headers, title=title)
    for cells in lines:
        table.add_row(*cells)
    console.print(table)
    print(f"\n{title}\n\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for cells in lines:
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.shape == "mistral-7b" and args.device != "cuda":
        raise SystemExit("--shape mistral-7b needs --device cuda (use --shape tiny on CPU)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape == "minilm":
        results = bench_minilm(args)
        report_minilm(args, results)
    else:
        results = bench_decoder(args)
        report_decoder(results)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()
