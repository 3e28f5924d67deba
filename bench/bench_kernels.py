"""Benchmark the segmented multi-LoRA product: Triton (SGMV/BGMV) vs the PyTorch grouped-matmul path.

Mistral-7B-like defaults: in=4096, out in {4096, 14336}, rank 16, 8 adapters, 2048-8192 rows, the
rows split into one contiguous segment per adapter (as the batch engine sorts them). On CUDA both
backends are timed (CUDA events) and checked against each other; on CPU only the PyTorch path is
timed (the Triton kernels need a GPU; on CPU they only run under the slow TRITON_INTERPRET=1).

    .venv/bin/python bench/bench_kernels.py --device cuda
    .venv/bin/python bench/bench_kernels.py --device cpu --rows 2048 4096 --iters 3
    .venv/bin/python bench/bench_kernels.py --device cuda --rows 8 64 --out-features 4096   # decode sizes (BGMV)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from assay.kernels import LoraStack, Segments, segmented_lora, triton_available

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--rows", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--in-features", type=int, default=4096)
    p.add_argument("--out-features", type=int, nargs="+", default=[4096, 14336])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--warmup", type=int, default=None, help="default: 10 on cuda, 1 on cpu")
    p.add_argument("--iters", type=int, default=None, help="default: 50 on cuda, 5 on cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    return p.parse_args()


def make_problem(rows: int, in_f: int, out_f: int, rank: int, n_adapters: int, dtype: torch.dtype, device: str):
    """Random stack + activations; rows split evenly into one contiguous segment per adapter."""
    g = torch.Generator(device="cpu").manual_seed(0)
    pairs = [(torch.randn(in_f, rank, generator=g) / in_f**0.5, torch.randn(rank, out_f, generator=g) / rank**0.5)
             for _ in range(n_adapters)]
    stack = LoraStack.from_pairs(pairs, [2.0] * n_adapters, dtype=dtype, device=device)
    row_adapter = torch.arange(rows, dtype=torch.int32) * n_adapters // max(rows, 1)
    segments = Segments.from_row_adapters(row_adapter.to(device))
    x = torch.randn(rows, in_f, generator=g).to(device=device, dtype=dtype)
    out = torch.zeros(rows, out_f, dtype=dtype, device=device)
    return stack, segments, x, out


def time_ms(fn: Callable[[], object], device: str, warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    iters = args.iters if args.iters is not None else (50 if on_gpu else 5)
    backends = ["torch", "triton"] if on_gpu and triton_available() else ["torch"]
    console = Console()
    if not on_gpu:
        console.print(f"[yellow]CPU: timing the PyTorch path only (Triton kernels are GPU-only); "
                      f"torch threads = {torch.get_num_threads()}[/]")

    elem = torch.finfo(dtype).bits // 8
    configs = [(rows, out_f) for out_f in args.out_features for rows in args.rows]
    results = []
    for rows, out_f in track(configs, description="benchmarking", console=console):
        stack, segments, x, out = make_problem(rows, args.in_features, out_f, args.rank, args.adapters, dtype,
                                               args.device)
        row = {"rows": rows, "out": out_f, "seg_rows": segments.max_rows}
        for backend in backends:
            row[backend] = time_ms(lambda b=backend: segmented_lora(x, stack, segments, out, backend=b),
                                   args.device, warmup, iters)
        if "triton" in backends:
            from assay.kernels import lora_triton

            ref = segmented_lora(x, stack, segments, torch.zeros_like(out), backend="torch").float()
            got = segmented_lora(x, stack, segments, torch.zeros_like(out), backend="triton").float()
            row["rel_err"] = ((got - ref).norm() / ref.norm()).item()
            row["kernel"] = "bgmv" if segments.max_rows <= lora_triton.BGMV_MAX_SEGMENT_ROWS else "sgmv"
        # minimum traffic: read x, read+write out, read the adapters once
        row["bytes"] = elem * (rows * args.in_features + 2 * rows * out_f
                               + args.adapters * args.rank * (args.in_features + out_f))
        results.append(row)

    title = (f"segmented LoRA, {args.device} {str(dtype).removeprefix('torch.')}, in={args.in_features}, "
             f"r={args.rank}, {args.adapters} adapters, median of {iters}")
    headers = ["rows", "out", "rows/seg"] + [f"{b} ms" for b in backends] + [f"{b} GB/s" for b in backends]
    if "triton" in backends:
        headers += ["speedup", "kernel", "rel err"]
    lines = []
    for r in results:
        cells = [str(r["rows"]), str(r["out"]), str(r["seg_rows"])]
        cells += [f"{r[b]:.3f}" for b in backends] + [f"{r['bytes'] / r[b] / 1e6:.0f}" for b in backends]
        if "triton" in backends:
            cells += [f"{r['torch'] / r['triton']:.2f}x", r["kernel"], f"{r['rel_err']:.1e}"]
        lines.append(cells)
    table = Table(*headers, title=title)
    for cells in lines:
        table.add_row(*cells)
    console.print(table)
    if args.markdown:
        print(f"\n{title}\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
