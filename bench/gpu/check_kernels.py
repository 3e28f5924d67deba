"""The Triton SGMV/BGMV kernels compiled for the GPU, in bf16 and fp16, against the torch reference.

Each case is one adapted linear layer: ``hidden`` in (4096, 5120; Mistral-7B and Llama-13B), out the same
or the MLP width, 1 to 64 adapters of ranks 8/16/64 (mixed in one stack), segments of uneven length with
rows of no adapter between them, or 1-2 row segments (decode-sized, the BGMV regime). Per case:

* reference: the torch backend in float32 on the same (bf16/fp16-rounded) inputs, TF32 off;
* ``segmented_lora`` with the default backend (what the engine calls; Triton on CUDA): which kernel the
  dispatch picked (BGMV when every segment has <= ``BGMV_MAX_SEGMENT_ROWS`` rows) and its error;
* SGMV and BGMV run explicitly (both on every case: the timings show where the dispatch threshold lies),
  and the torch backend in the same dtype: relative Frobenius error of ``y`` (shrink) and ``out``;
* rows without an adapter must stay bit-identical; timings (CUDA events, median of 20).

Bounds (u = unit roundoff, 2^-8 bf16, 2^-11 fp16): products of bf16/fp16 operands are exact in fp32 and the
kernels accumulate in fp32 (relative error ~ sqrt(K) 2^-24, 4e-6 at K=5120), so ``y`` must be within
2^-13; ``out`` is rounded twice: ``y`` to the operand dtype before the expand product (<= u per term,
independent signs: ~u/sqrt(3) of the delta in norm) and the result when stored (<= u), so ``out`` must be
within 2u (bf16 7.8e-3, fp16 9.8e-4).

    bench/gpu/run.sh                 # all checks on the GPU
    TRITON_INTERPRET=1 .venv/bin/python bench/gpu/check_kernels.py --tiny --out /tmp/gpu-dry
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import common
import torch

from assay.kernels import LoraStack, Segments, segmented_lora, sgmv_expand, sgmv_shrink

DTYPES = {"bf16": (torch.bfloat16, common.BF16_U), "fp16": (torch.float16, common.FP16_U)}
Y_BOUND = 2.0**-13
MLP = {4096: 14336, 5120: 13824, 48: 96, 80: 112}  # Mistral-7B, Llama-13B intermediate sizes; tiny ones


def layouts(tiny: bool) -> list[dict[str, Any]]:
    """The cases per hidden size: adapters, ranks, segment layout, rows, out width."""
    rows = 64 if tiny else 4096
    few = 4 if tiny else 64
    return [
        {"name": "8 adapters r16, even segments", "ranks": [16] * 8, "layout": "even", "rows": rows},
        {"name": f"{few} adapters r8/16/64 mixed, uneven segments", "ranks": [(8, 16, 64)[i % 3] for i in range(few)],
         "layout": "uneven", "rows": 2 * rows},
        {"name": "1 adapter r64", "ranks": [64], "layout": "even", "rows": rows // 2},
        {"name": "32 adapters r8, uneven, MLP out", "ranks": [8] * (8 if tiny else 32), "layout": "uneven",
         "rows": rows, "mlp_out": True},
        {"name": f"{few} adapters mixed, 1-row segments (decode)", "ranks": [8, 16, 64, 16] * (few // 4),
         "layout": "rows1", "rows": few},
        {"name": "32 adapters r16, 2-row segments", "ranks": [16] * (8 if tiny else 32), "layout": "rows2",
         "rows": 16 if tiny else 64},
    ]


def row_adapters(layout: str, n_adapters: int, rows: int, g: torch.Generator) -> torch.Tensor:
    """Per-row adapter ids (-1 = none): one run per adapter (even / k-row), or random-length runs (uneven)."""
    if layout == "even":
        return torch.arange(rows, dtype=torch.int32) * n_adapters // rows
    if layout.startswith("rows"):
        per = int(layout[4:])
        return torch.arange(n_adapters, dtype=torch.int32).repeat_interleave(per)
    ids: list[int] = []
    while len(ids) < rows:
        length = int(torch.randint(1, max(2, 2 * rows // n_adapters), (1,), generator=g))
        ids += [int(torch.randint(-1, n_adapters, (1,), generator=g))] * length
    return torch.tensor(ids[:rows], dtype=torch.int32)


def make_problem(spec: dict[str, Any], hidden: int, dtype: torch.dtype, device: str, seed: int):
    """Random stack, segments, activations and a non-zero ``out``, generated on ``device`` (fast on a GPU)."""
    g = torch.Generator().manual_seed(seed)  # layout and scales: small, on the host
    gd = torch.Generator(device=device).manual_seed(seed)
    in_f, out_f = hidden, MLP[hidden] if spec.get("mlp_out") else hidden
    ranks = spec["ranks"]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gd, device=device)

    pairs = [(randn(in_f, r) / in_f**0.5, randn(r, out_f) / r**0.5) for r in ranks]
    scales = [float(s) for s in torch.rand(len(ranks), generator=g) * 2 + 0.25]
    stack = LoraStack.from_pairs(pairs, scales, dtype=dtype, device=device)
    rows = row_adapters(spec["layout"], len(ranks), spec["rows"], g)
    seg = Segments.from_row_adapters(rows.to(device))
    x = randn(len(rows), in_f).to(dtype)
    out0 = (randn(len(rows), out_f) * 0.5).to(dtype)
    return stack, seg, x, out0, rows


@contextmanager
def counted_kernels():
    """Count calls of the Triton SGMV/BGMV shrink functions (to see what the dispatch picked)."""
    from assay.kernels import lora_triton as lt

    counts = {"sgmv": 0, "bgmv": 0}
    originals = {"sgmv": lt.sgmv_shrink, "bgmv": lt.bgmv_shrink}

    def wrap(kind):
        def counted(*args, **kwargs):
            counts[kind] += 1
            return originals[kind](*args, **kwargs)
        return counted

    lt.sgmv_shrink, lt.bgmv_shrink = wrap("sgmv"), wrap("bgmv")
    try:
        yield counts
    finally:
        lt.sgmv_shrink, lt.bgmv_shrink = originals["sgmv"], originals["bgmv"]


def variants():
    """name -> (shrink, expand) for the explicit Triton kernels."""
    from assay.kernels import lora_triton as lt

    return {"sgmv": (lt.sgmv_shrink, lt.sgmv_expand), "bgmv": (lt.bgmv_shrink, lt.bgmv_expand)}


def run_case(spec: dict[str, Any], hidden: int, dtype_name: str, check: common.Check, seed: int) -> dict[str, Any]:
    """Errors, dispatch and timings of one case (see the module docstring)."""
    from assay.kernels import lora_triton as lt

    dtype, u = DTYPES[dtype_name]
    device = check.device
    stack, seg, x, out0, rows = make_problem(spec, hidden, dtype, device, seed)
    ref_stack = LoraStack(stack.a.float(), stack.b.float(), stack.scales, stack.ranks)
    ref_y = sgmv_shrink(x.float(), ref_stack, seg, backend="torch")
    ref = sgmv_expand(ref_y, ref_stack, seg, out0.float().clone(), backend="torch")
    untouched = (rows == -1).to(device)
    backend = "triton" if check.tiny else "auto"  # auto is Triton on CUDA; on CPU the interpreter needs it named
    expected = "bgmv" if seg.max_rows <= lt.BGMV_MAX_SEGMENT_ROWS else "sgmv"
    with counted_kernels() as counts:
        auto_out = segmented_lora(x, stack, seg, out0.clone(), backend=backend)
    picked = [kind for kind, n in counts.items() if n]
    result: dict[str, Any] = {
        "hidden": hidden, "in": stack.in_features, "out": stack.out_features, "dtype": dtype_name,
        "adapters": stack.n_adapters, "ranks": sorted(set(stack.host_ranks)), "rows": seg.n_rows,
        "segments": seg.n_segments, "max_segment_rows": seg.max_rows, "rows_without_adapter": int(untouched.sum()),
        "dispatch_expected": expected, "dispatch_picked": picked, "out_bound": 2 * u, "y_bound": Y_BOUND,
        "auto_out_err": rel_err_or_zero(auto_out, ref),
    }
    ok = picked == [expected] and result["auto_out_err"] <= 2 * u
    iters = 1 if check.tiny else 20
    for name, (shrink, expand) in variants().items():
        y = shrink(x, stack, seg)
        out = expand(y, stack, seg, out0.clone())
        result[f"{name}_y_err"], result[f"{name}_out_err"] = rel_err_or_zero(y, ref_y), rel_err_or_zero(out, ref)
        result[f"{name}_untouched_equal"] = bool(torch.equal(out[untouched], out0[untouched]))
        ok &= result[f"{name}_y_err"] <= Y_BOUND and result[f"{name}_out_err"] <= 2 * u
        ok &= result[f"{name}_untouched_equal"]
        buf = out0.clone()
        result[f"{name}_ms"] = common.time_ms(lambda s=shrink, e=expand, buf=buf: e(s(x, stack, seg), stack, seg, buf),
                                              device,
                                              warmup=0 if check.tiny else 3, iters=iters)["median_ms"]
    torch_out = segmented_lora(x, stack, seg, out0.clone(), backend="torch")
    result["torch_out_err"] = rel_err_or_zero(torch_out, ref)
    buf = out0.clone()
    result["torch_ms"] = common.time_ms(lambda: segmented_lora(x, stack, seg, buf, backend="torch"), device,
                                        warmup=0 if check.tiny else 3, iters=iters)["median_ms"]
    result["speedup_vs_torch"] = result["torch_ms"] / result[f"{expected}_ms"]
    result["pass"] = bool(ok)
    return result


def rel_err_or_zero(got: torch.Tensor, ref: torch.Tensor) -> float:
    return common.rel_err(got, ref) if ref.numel() else 0.0


def dispatch_edges(check: common.Check) -> dict[str, Any]:
    """The threshold itself: segments of exactly BGMV_MAX_SEGMENT_ROWS rows, and one row more."""
    from assay.kernels import lora_triton as lt

    edge = lt.BGMV_MAX_SEGMENT_ROWS
    backend = "triton" if check.tiny else "auto"
    out: dict[str, Any] = {"bgmv_max_segment_rows": edge}
    ok = True
    for per, want in ((edge, "bgmv"), (edge + 1, "sgmv")):
        spec = {"ranks": [16, 8, 64, 16], "layout": f"rows{per}", "rows": 4 * per}
        stack, seg, x, out0, _ = make_problem(spec, 64, torch.bfloat16, check.device, seed=per)
        with counted_kernels() as counts:
            segmented_lora(x, stack, seg, out0.clone(), backend=backend)
        picked = [kind for kind, n in counts.items() if n]
        out[f"{per}_rows_picked"] = picked
        ok &= picked == [want]
    out["pass"] = bool(ok)
    return out


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args("kernels", __doc__, argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is exact-product fp32, not TF32
    check = common.Check("kernels", args)
    hiddens = (48,) if args.tiny else (4096, 5120)
    check.case("dispatch threshold", lambda: dispatch_edges(check))
    seed = 0
    for dtype_name in DTYPES:
        for hidden in hiddens:
            for spec in layouts(args.tiny):
                seed += 1
                check.case(f"{dtype_name} hidden {hidden}: {spec['name']}",
                           lambda spec=spec, hidden=hidden, dtype_name=dtype_name, seed=seed:
                           run_case(spec, hidden, dtype_name, check, seed), needs_s=5)
    check.finish({"hiddens": list(hiddens), "dtypes": list(DTYPES), "y_bound": Y_BOUND,
                  "out_bound": {k: 2 * u for k, (_, u) in DTYPES.items()}, "timing_iters": 1 if args.tiny else 20,
                  "allow_tf32": False, "layouts": layouts(args.tiny)})


if __name__ == "__main__":
    main()
