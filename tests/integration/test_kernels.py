"""Tests of assay.kernels: LoraStack/Segments, the PyTorch path against a dense per-row formula,
and the Triton kernels against the PyTorch path.

Triton reads TRITON_INTERPRET when a kernel is decorated (``@triton.jit`` at import of
``assay.kernels.lora_triton``), so the interpreted comparisons (``test_interp_*``) run in a child
pytest process started by ``test_triton_interpreted_matches_torch`` with TRITON_INTERPRET=1; in the
parent process they are skipped and nothing leaks to other test modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from assay.kernels import LoraStack, Segments, segmented_lora, sgmv_expand, sgmv_shrink, triton_available

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 child of test_triton_interpreted_matches_torch")
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_case(seed: int, row_adapter: list[int], ranks: list[int], in_f: int, out_f: int, dtype=torch.float32):
    """Random adapters of the given ranks, activations and a non-zero ``out`` to add into."""
    g = torch.Generator().manual_seed(seed)
    pairs = [(torch.randn(in_f, r, generator=g) / in_f**0.5, torch.randn(r, out_f, generator=g) / r**0.5)
             for r in ranks]
    scales = [float(s) for s in (torch.rand(len(ranks), generator=g) * 2 + 0.25)]
    stack = LoraStack.from_pairs(pairs, scales, dtype=dtype)
    x = torch.randn(len(row_adapter), in_f, generator=g).to(dtype)
    out0 = torch.randn(len(row_adapter), out_f, generator=g).to(dtype)
    return pairs, scales, stack, x, out0


def dense_per_row(x, pairs, scales, row_adapter: list[int], out0) -> torch.Tensor:
    """The definition, row by row in float64: out[r] += s_i * x[r] @ A_i @ B_i."""
    out = out0.double().clone()
    for row, i in enumerate(row_adapter):
        if i >= 0:
            a_i, b_i = pairs[i]
            out[row] += scales[i] * (x[row].double() @ a_i.double() @ b_i.double())
    return out


def mixed_rows(seed: int, n_rows: int, n_adapters: int) -> list[int]:
    """Runs of random length, adapters in [-1, n_adapters), rows n/3 .. n/3+2 without adapter."""
    g = torch.Generator().manual_seed(seed)
    rows: list[int] = []
    while len(rows) < n_rows:
        rows += [int(torch.randint(-1, n_adapters, (1,), generator=g))] * int(torch.randint(1, 12, (1,), generator=g))
    rows = rows[:n_rows]
    rows[n_rows // 3: n_rows // 3 + 3] = [-1] * len(rows[n_rows // 3: n_rows // 3 + 3])  # always some untouched rows
    return rows


def with_empty_segments(row_adapter: list[int]) -> Segments:
    """Segments of ``row_adapter`` with an empty segment before each run and at the end."""
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    bounds, ids = seg.indptr.tolist(), seg.adapter.tolist()
    indptr, adapter = [0], []
    for s, i in enumerate(ids):
        indptr += [bounds[s], bounds[s + 1]]
        adapter += [(i + 1) % 3, i]
    indptr.append(bounds[-1])
    adapter.append(0)
    return Segments(indptr=torch.tensor(indptr, dtype=torch.int32), adapter=torch.tensor(adapter, dtype=torch.int32))


# ---------------------------------------------------------------------------------------------
# LoraStack / Segments


def test_from_pairs_zero_pads_to_max_rank():
    pairs = [(torch.randn(6, 2), torch.randn(2, 5)), (torch.randn(6, 4), torch.randn(4, 5))]
    stack = LoraStack.from_pairs(pairs, [0.5, 2.0], dtype=torch.bfloat16)
    assert stack.a.shape == (2, 6, 4) and stack.b.shape == (2, 4, 5) and stack.a.dtype == torch.bfloat16
    assert stack.ranks.dtype == torch.int32 and stack.ranks.tolist() == [2, 4]
    assert stack.scales.dtype == torch.float32 and stack.scales.tolist() == [0.5, 2.0]
    assert torch.equal(stack.a[0, :, :2], pairs[0][0].bfloat16()) and torch.equal(stack.b[0, :2], pairs[0][1].bfloat16())
    assert not stack.a[0, :, 2:].any() and not stack.b[0, 2:].any()
    assert torch.equal(stack.a[1], pairs[1][0].bfloat16())
    assert (stack.n_adapters, stack.in_features, stack.out_features, stack.r_max) == (2, 6, 5, 4)


@pytest.mark.parametrize("pairs, scales, match", [
    ([], [], "at least one"),
    ([(torch.randn(6, 2), torch.randn(3, 5))], [1.0], "expected A"),
    ([(torch.randn(6, 2), torch.randn(2, 5)), (torch.randn(7, 2), torch.randn(2, 5))], [1.0, 1.0], "pair 1"),
    ([(torch.randn(6, 2), torch.randn(2, 5))], [1.0, 2.0], "scales"),
])
def test_from_pairs_rejects_bad_pairs(pairs, scales, match):
    with pytest.raises(ValueError, match=match):
        LoraStack.from_pairs(pairs, scales)


def test_segments_from_row_adapters_run_length_encodes():
    seg = Segments.from_row_adapters(torch.tensor([2, 2, -1, 0, 0, 0, 2]))
    assert seg.indptr.dtype == torch.int32 and seg.adapter.dtype == torch.int32
    assert seg.indptr.tolist() == [0, 2, 3, 6, 7] and seg.adapter.tolist() == [2, -1, 0, 2]
    assert (seg.n_rows, seg.max_rows, seg.max_adapter, seg.n_segments) == (7, 3, 2, 4)
    assert seg.row_adapters.tolist() == [2, 2, -1, 0, 0, 0, 2]
    empty = Segments.from_row_adapters(torch.zeros(0, dtype=torch.int64))
    assert empty.indptr.tolist() == [0] and (empty.n_rows, empty.max_rows) == (0, 0)


@pytest.mark.parametrize("indptr, adapter, match", [
    (torch.tensor([0, 2], dtype=torch.int64), torch.tensor([0], dtype=torch.int32), "int32"),
    (torch.tensor([0, 3, 2], dtype=torch.int32), torch.tensor([0, 0], dtype=torch.int32), "non-decreasing"),
    (torch.tensor([1, 3], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), "start at 0"),
    (torch.tensor([0, 3], dtype=torch.int32), torch.tensor([-2], dtype=torch.int32), ">= -1"),
    (torch.tensor([0, 3], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32), r"indptr \[n\+1\]"),
])
def test_segments_reject_bad_input(indptr, adapter, match):
    with pytest.raises(ValueError, match=match):
        Segments(indptr=indptr, adapter=adapter)


def test_mismatched_operands_raise():
    _, _, stack, x, out0 = make_case(0, [0, 1, 1], [4, 8], 16, 12)
    seg = Segments.from_row_adapters(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="bfloat16"):
        segmented_lora(x.bfloat16(), stack, seg, out0)
    with pytest.raises(ValueError, match="cover 2 rows"):
        segmented_lora(x, stack, Segments.from_row_adapters(torch.tensor([0, 1])), out0)
    with pytest.raises(ValueError, match="out of range"):
        segmented_lora(x, stack, Segments.from_row_adapters(torch.tensor([0, 1, 2])), out0)
    with pytest.raises(ValueError, match="out must be"):
        segmented_lora(x, stack, seg, out0[:, :5])
    with pytest.raises(ValueError, match="out must be torch.float32"):
        segmented_lora(x, stack, seg, out0.bfloat16())
    if triton_available() and not INTERPRETED:
        with pytest.raises(RuntimeError, match="need CUDA tensors"):
            segmented_lora(x, stack, seg, out0, backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        segmented_lora(x, stack, seg, out0, backend="cuda")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# PyTorch path against the dense per-row definition


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_path_matches_dense_per_row(seed):
    ranks = [4, 16, 64, 7]
    row_adapter = mixed_rows(seed, 90, len(ranks))
    pairs, scales, stack, x, out0 = make_case(seed, row_adapter, ranks, 48, 40)
    out = segmented_lora(x, stack, Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32)), out0.clone(),
                         backend="torch")
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]
    untouched = torch.tensor(row_adapter) == -1
    assert untouched.any() and torch.equal(out[untouched], out0[untouched])


def test_torch_path_empty_segments_and_tiny_batches():
    ranks = [4, 9, 16]
    row_adapter = mixed_rows(3, 30, len(ranks))
    pairs, scales, stack, x, out0 = make_case(3, row_adapter, ranks, 24, 20)
    out = segmented_lora(x, stack, with_empty_segments(row_adapter), out0.clone(), backend="torch")
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]
    for n in (0, 1):
        seg = Segments.from_row_adapters(torch.tensor([1] * n, dtype=torch.int32))
        out = segmented_lora(x[:n], stack, seg, out0[:n].clone(), backend="torch")
        assert out.shape == (n, 20)
        assert rel_err(out, dense_per_row(x[:n], pairs, scales, [1] * n, out0[:n])) < TOL[torch.float32]


def test_torch_path_non_contiguous_inputs():
    ranks = [5, 12]
    row_adapter = mixed_rows(4, 25, len(ranks))
    pairs, scales, stack, x, out0 = make_case(4, row_adapter, ranks, 32, 16)
    x_view = x.t().contiguous().t()  # column-major
    big = torch.zeros(25, 40)
    out_view = big[:, 3:35:2]  # strided columns
    out_view.copy_(out0)
    segmented_lora(x_view, stack, Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32)), out_view, backend="torch")
    assert rel_err(out_view, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]
    assert not big[:, :3].any() and not big[:, 4:35:2].any()


def test_auto_on_cpu_and_split_shrink_expand():
    ranks = [4, 16]
    row_adapter = [0, 0, -1, 1, 1, 1]
    pairs, scales, stack, x, out0 = make_case(5, row_adapter, ranks, 16, 8)
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    y = sgmv_shrink(x, stack, seg)
    assert y.shape == (6, 16) and y.dtype == torch.float32
    assert not y[2].any() and not y[:2, 4:].any()  # no adapter / beyond rank 4 stay zero
    out = sgmv_expand(y, stack, seg, out0.clone())
    assert torch.equal(out, segmented_lora(x, stack, seg, out0.clone()))
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]


# ---------------------------------------------------------------------------------------------
# Triton kernels


@pytest.mark.skipif(not triton_available() or INTERPRETED, reason="needs triton, compiled mode")
@pytest.mark.parametrize("arch", [80, 90])
def test_triton_kernels_compile_for_gpu(arch):
    """Ahead-of-time compile every kernel to a CUDA binary (no GPU needed): catches Triton errors
    that the interpreter does not (tile-size rules, dtype rules of tl.dot)."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from assay.kernels import lora_triton as lt

    def signature(kernel, act: str, fp32_ptrs: tuple[str, ...], act_ptrs: tuple[str, ...], consts: dict):
        sig = {}
        for name in kernel.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name in act_ptrs:
                sig[name] = "*" + act
            elif name in fp32_ptrs:
                sig[name] = "*fp32"
            else:
                sig[name] = "*i32" if name.endswith("_ptr") else "i32"
        return sig

    for act in ("bf16", "fp32"):
        prec = "ieee" if act == "fp32" else "tf32"
        cases = [
            (lt._sgmv_shrink_kernel, ("y_ptr",), ("x_ptr", "a_ptr"),
             dict(BLOCK_M=32, BLOCK_K=64, BLOCK_R=64, PRECISION=prec, UPCAST_DOT=False)),
            (lt._sgmv_expand_kernel, ("y_ptr", "scales_ptr"), ("b_ptr", "out_ptr"),
             dict(BLOCK_M=64, BLOCK_N=64, BLOCK_R=16, PRECISION=prec, UPCAST_DOT=False)),
            (lt._bgmv_shrink_kernel, ("y_ptr",), ("x_ptr", "a_ptr"), dict(BLOCK_K=64, BLOCK_R=16)),
            (lt._bgmv_expand_kernel, ("y_ptr", "scales_ptr"), ("b_ptr", "out_ptr"), dict(BLOCK_N=128, BLOCK_R=16)),
        ]
        for kernel, fp32_ptrs, act_ptrs, consts in cases:
            src = ASTSource(fn=kernel, signature=signature(kernel, act, fp32_ptrs, act_ptrs, consts), constexprs=consts)
            assert triton_compile(src, target=GPUTarget("cuda", arch, 32)).asm["cubin"]


@pytest.mark.skipif(not triton_available() or INTERPRETED, reason="needs triton; this is the parent process")
def test_triton_interpreted_matches_torch():
    """Run the test_interp_* tests of this file in a child pytest with TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-k", "test_interp_",
         "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


def _variant(name: str):
    from assay.kernels import lora_triton as lt

    if name == "sgmv":
        return lt.sgmv_shrink, lt.sgmv_expand
    return lt.bgmv_shrink, lt.bgmv_expand


@needs_interpreter
@pytest.mark.parametrize("variant", ["sgmv", "bgmv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("seed", [0, 1])
def test_interp_random_shapes_match_torch(seed, dtype, variant):
    g = torch.Generator().manual_seed(100 + seed)
    in_f, out_f = (int(v) for v in torch.randint(16, 97, (2,), generator=g))
    ranks = [int(r) for r in torch.randint(4, 65, (3,), generator=g)] + [4, 64]
    row_adapter = mixed_rows(seed, 45, len(ranks))
    _, _, stack, x, out0 = make_case(seed, row_adapter, ranks, in_f, out_f, dtype)
    seg = with_empty_segments(row_adapter) if seed else Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    shrink, expand = _variant(variant)
    ref_stack = LoraStack(stack.a.float(), stack.b.float(), stack.scales, stack.ranks)
    ref_y = sgmv_shrink(x.float(), ref_stack, seg, backend="torch")
    ref = sgmv_expand(ref_y, ref_stack, seg, out0.float().clone(), backend="torch")
    y = shrink(x, stack, seg)
    out = expand(y, stack, seg, out0.clone())
    assert y.dtype == torch.float32 and out.dtype == dtype
    assert rel_err(y, ref_y) < TOL[dtype] and rel_err(out, ref) < TOL[dtype]
    untouched = torch.tensor(row_adapter) == -1
    assert untouched.any() and torch.equal(out[untouched], out0[untouched])


@needs_interpreter
@pytest.mark.parametrize("variant", ["sgmv", "bgmv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_interp_long_segments_span_several_tiles(dtype, variant):
    """Segments longer than the row tiles (32 shrink, 64 expand), in/out over several K/N tiles."""
    row_adapter = [0] * 70 + [-1] * 5 + [1] * 40 + [2] * 33
    pairs, scales, stack, x, out0 = make_case(6, row_adapter, [16, 5, 64], 150, 140, dtype)
    shrink, expand = _variant(variant)
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    out = expand(shrink(x, stack, seg), stack, seg, out0.clone())
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[dtype]
    assert torch.equal(out[70:75], out0[70:75])


@needs_interpreter
@pytest.mark.parametrize("variant", ["sgmv", "bgmv"])
@pytest.mark.parametrize("n_rows", [0, 1])
def test_interp_zero_and_one_row(variant, n_rows):
    row_adapter = [1] * n_rows
    pairs, scales, stack, x, out0 = make_case(7, row_adapter, [8, 20], 32, 24)
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    shrink, expand = _variant(variant)
    out = expand(shrink(x, stack, seg), stack, seg, out0.clone())
    assert out.shape == (n_rows, 24)
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]


@needs_interpreter
@pytest.mark.parametrize("variant", ["sgmv", "bgmv"])
def test_interp_non_contiguous_inputs(variant):
    ranks = [6, 16, 33]
    row_adapter = mixed_rows(8, 30, len(ranks))
    pairs, scales, stack, x, out0 = make_case(8, row_adapter, ranks, 40, 24)
    strided = LoraStack(stack.a.transpose(1, 2).contiguous().transpose(1, 2),
                        stack.b.transpose(1, 2).contiguous().transpose(1, 2), stack.scales, stack.ranks)
    x_view = x.t().contiguous().t()
    big = torch.zeros(30, 50)
    out_view = big[:, 1:49:2]
    out_view.copy_(out0)
    shrink, expand = _variant(variant)
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    expand(shrink(x_view, strided, seg), strided, seg, out_view)
    assert rel_err(out_view, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.float32]
    assert not big[:, 0].any() and not big[:, 2:49:2].any()


@needs_interpreter
@pytest.mark.parametrize("rows_per_segment", [1, 5])
def test_interp_segmented_lora_triton_backend(rows_per_segment):
    """segmented_lora(backend='triton') picks BGMV for 1-row segments and SGMV otherwise."""
    row_adapter = [s % 4 - 1 for s in range(12) for _ in range(rows_per_segment)]
    pairs, scales, stack, x, out0 = make_case(9, row_adapter, [4, 32, 64], 24, 20, torch.bfloat16)
    seg = Segments.from_row_adapters(torch.tensor(row_adapter, dtype=torch.int32))
    out = segmented_lora(x, stack, seg, out0.clone(), backend="triton")
    ref = segmented_lora(x, stack, seg, out0.clone(), backend="torch")
    assert rel_err(out, ref) < TOL[torch.bfloat16]
    assert rel_err(out, dense_per_row(x, pairs, scales, row_adapter, out0)) < TOL[torch.bfloat16]
