"""Triton backend of the segmented LoRA product: SGMV and BGMV shrink/expand kernels.

* **SGMV** (segmented gather matrix-vector, Punica): one program per (segment, row tile[, out
  tile]); rows of a tile share the adapter, so the adapter weights are read once per tile and the
  product runs on tensor cores (``tl.dot``). ``tl.dot`` needs tiles of at least 16 on every side,
  so the rank tile is padded to ``max(16, next_pow2(r_max))`` and masked by the adapter's rank;
  segment tails are masked by the segment end.
* **BGMV** (batched gather matrix-vector): one program per row (and out tile). Used when segments
  hold at most :data:`BGMV_MAX_SEGMENT_ROWS` rows (decode-sized batches, every request a different
  adapter), where an SGMV row tile of 16 would be mostly padding. It is a GEMV written as a
  broadcast multiply + ``tl.sum`` (no ``tl.dot``, so no 16-row minimum).

All accumulation is float32; the shrink result ``y`` is float32 ``[rows, r_max]``; the expand
adds ``scale * y @ b`` to ``out`` in float32 and stores in ``out``'s dtype. Any strides are
accepted (row offsets are 64-bit). Block sizes are fixed heuristics, not tuned on a GPU yet.

Under ``TRITON_INTERPRET=1`` (CPU tests) the interpreter multiplies bfloat16 ``tl.dot`` operands
as raw uint16 bits (triton 3.7 ``create_dot``), so the kernels then upcast dot operands to float32
(``UPCAST_DOT``); bf16 x bf16 products are exact in float32, so results match the GPU path up to
summation order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from assay.kernels.lora import LoraStack, Segments

BGMV_MAX_SEGMENT_ROWS = 2
"""Longest segment for which :func:`segmented_lora` uses the BGMV kernels instead of SGMV."""


@triton.jit
def _sgmv_shrink_kernel(
    x_ptr, a_ptr, y_ptr, indptr_ptr, adapter_ptr, ranks_ptr,
    in_features, r_max,
    stride_xm, stride_xk, stride_ai, stride_ak, stride_ar, stride_ym, stride_yr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    seg = tl.program_id(0)
    adapter = tl.load(adapter_ptr + seg)
    if adapter < 0:
        return
    end = tl.load(indptr_ptr + seg + 1)
    row0 = tl.load(indptr_ptr + seg) + tl.program_id(1) * BLOCK_M
    if row0 >= end:
        return
    rank = tl.load(ranks_ptr + adapter)
    rows = row0 + tl.arange(0, BLOCK_M)
    row_mask = rows < end
    rcols = tl.arange(0, BLOCK_R)
    r_mask = rcols < rank
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rows[:, None].to(tl.int64) * stride_xm + ks[None, :] * stride_xk
    a_ptrs = a_ptr + adapter.to(tl.int64) * stride_ai + ks[:, None] * stride_ak + rcols[None, :] * stride_ar
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, in_features, BLOCK_K):
        k_mask = (k0 + ks) < in_features
        x = tl.load(x_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        a = tl.load(a_ptrs, mask=k_mask[:, None] & r_mask[None, :], other=0.0)
        if UPCAST_DOT:
            acc = tl.dot(x.to(tl.float32), a.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, a, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        a_ptrs += BLOCK_K * stride_ak
    y_ptrs = y_ptr + rows[:, None].to(tl.int64) * stride_ym + rcols[None, :] * stride_yr
    tl.store(y_ptrs, acc, mask=row_mask[:, None] & (rcols[None, :] < r_max))


@triton.jit
def _sgmv_expand_kernel(
    y_ptr, b_ptr, out_ptr, indptr_ptr, adapter_ptr, ranks_ptr, scales_ptr,
    out_features,
    stride_ym, stride_yr, stride_bi, stride_br, stride_bn, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    seg = tl.program_id(0)
    adapter = tl.load(adapter_ptr + seg)
    if adapter < 0:
        return
    end = tl.load(indptr_ptr + seg + 1)
    row0 = tl.load(indptr_ptr + seg) + tl.program_id(1) * BLOCK_M
    if row0 >= end:
        return
    rank = tl.load(ranks_ptr + adapter)
    scale = tl.load(scales_ptr + adapter)
    rows = row0 + tl.arange(0, BLOCK_M)
    row_mask = rows < end
    rcols = tl.arange(0, BLOCK_R)
    r_mask = rcols < rank
    cols = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = cols < out_features
    y = tl.load(y_ptr + rows[:, None].to(tl.int64) * stride_ym + rcols[None, :] * stride_yr,
                mask=row_mask[:, None] & r_mask[None, :], other=0.0)
    b = tl.load(b_ptr + adapter.to(tl.int64) * stride_bi + rcols[:, None] * stride_br + cols[None, :] * stride_bn,
                mask=r_mask[:, None] & n_mask[None, :], other=0.0)
    if UPCAST_DOT:
        delta = tl.dot(y, b.to(tl.float32), input_precision="ieee")
    else:
        delta = tl.dot(y.to(b.dtype), b, input_precision=PRECISION)
    out_ptrs = out_ptr + rows[:, None].to(tl.int64) * stride_om + cols[None, :] * stride_on
    mask = row_mask[:, None] & n_mask[None, :]
    acc = tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32) + scale * delta
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bgmv_shrink_kernel(
    x_ptr, a_ptr, y_ptr, row_adapter_ptr, ranks_ptr,
    in_features, r_max,
    stride_xm, stride_xk, stride_ai, stride_ak, stride_ar, stride_ym, stride_yr,
    BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    adapter = tl.load(row_adapter_ptr + row)
    if adapter < 0:
        return
    rank = tl.load(ranks_ptr + adapter)
    rcols = tl.arange(0, BLOCK_R)
    r_mask = rcols < rank
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + row * stride_xm + ks * stride_xk
    a_ptrs = a_ptr + adapter.to(tl.int64) * stride_ai + ks[:, None] * stride_ak + rcols[None, :] * stride_ar
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, in_features, BLOCK_K):
        k_mask = (k0 + ks) < in_features
        x = tl.load(x_ptrs, mask=k_mask, other=0.0).to(tl.float32)
        a = tl.load(a_ptrs, mask=k_mask[:, None] & r_mask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(x[:, None] * a, axis=0)
        x_ptrs += BLOCK_K * stride_xk
        a_ptrs += BLOCK_K * stride_ak
    tl.store(y_ptr + row * stride_ym + rcols * stride_yr, acc, mask=rcols < r_max)


@triton.jit
def _bgmv_expand_kernel(
    y_ptr, b_ptr, out_ptr, row_adapter_ptr, ranks_ptr, scales_ptr,
    out_features,
    stride_ym, stride_yr, stride_bi, stride_br, stride_bn, stride_om, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    adapter = tl.load(row_adapter_ptr + row)
    if adapter < 0:
        return
    rank = tl.load(ranks_ptr + adapter)
    scale = tl.load(scales_ptr + adapter)
    rcols = tl.arange(0, BLOCK_R)
    r_mask = rcols < rank
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = cols < out_features
    y = tl.load(y_ptr + row * stride_ym + rcols * stride_yr, mask=r_mask, other=0.0)
    b = tl.load(b_ptr + adapter.to(tl.int64) * stride_bi + rcols[:, None] * stride_br + cols[None, :] * stride_bn,
                mask=r_mask[:, None] & n_mask[None, :], other=0.0).to(tl.float32)
    delta = tl.sum(y[:, None] * b, axis=0)
    out_ptrs = out_ptr + row * stride_om + cols * stride_on
    acc = tl.load(out_ptrs, mask=n_mask, other=0.0).to(tl.float32) + scale * delta
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=n_mask)


def _block_r(r_max: int) -> int:
    return max(16, triton.next_power_of_2(r_max))


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs use exact fp32 products (like torch's default, no TF32); others ignore it."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast_dot(dtype: torch.dtype) -> bool:
    return dtype != torch.float32 and triton.knobs.runtime.interpret


def _block_m(max_rows: int) -> int:
    return 16 if max_rows <= 16 else 32


def sgmv_shrink(x: torch.Tensor, stack: LoraStack, segments: Segments) -> torch.Tensor:
    """SGMV shrink: ``[rows, r_max]`` float32, zeros for rows without an adapter."""
    y = torch.zeros((x.shape[0], stack.r_max), dtype=torch.float32, device=x.device)
    if not segments.host_bounds:
        return y
    block_m = _block_m(segments.max_rows)
    grid = (segments.n_segments, triton.cdiv(segments.max_rows, block_m))
    a = stack.a
    _sgmv_shrink_kernel[grid](
        x, a, y, segments.indptr.to(x.device), segments.adapter.to(x.device), stack.ranks,
        stack.in_features, stack.r_max,
        x.stride(0), x.stride(1), a.stride(0), a.stride(1), a.stride(2), y.stride(0), y.stride(1),
        BLOCK_M=block_m, BLOCK_K=64, BLOCK_R=_block_r(stack.r_max),
        PRECISION=_precision(x.dtype), UPCAST_DOT=_upcast_dot(x.dtype),
    )
    return y


def sgmv_expand(y: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor) -> torch.Tensor:
    """SGMV expand: ``out[seg] += scale_i * y[seg] @ b[i]`` in place; returns ``out``."""
    if not segments.host_bounds:
        return out
    block_m, block_n = 64, 64
    grid = (segments.n_segments, triton.cdiv(segments.max_rows, block_m), triton.cdiv(stack.out_features, block_n))
    b = stack.b
    _sgmv_expand_kernel[grid](
        y, b, out, segments.indptr.to(y.device), segments.adapter.to(y.device), stack.ranks, stack.scales,
        stack.out_features,
        y.stride(0), y.stride(1), b.stride(0), b.stride(1), b.stride(2), out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=_block_r(stack.r_max),
        PRECISION=_precision(b.dtype), UPCAST_DOT=_upcast_dot(b.dtype),
    )
    return out


def bgmv_shrink(x: torch.Tensor, stack: LoraStack, segments: Segments) -> torch.Tensor:
    """BGMV shrink (one program per row): same result as :func:`sgmv_shrink`."""
    y = torch.zeros((x.shape[0], stack.r_max), dtype=torch.float32, device=x.device)
    if not segments.host_bounds:
        return y
    a = stack.a
    _bgmv_shrink_kernel[(x.shape[0],)](
        x, a, y, segments.row_adapters.to(x.device), stack.ranks,
        stack.in_features, stack.r_max,
        x.stride(0), x.stride(1), a.stride(0), a.stride(1), a.stride(2), y.stride(0), y.stride(1),
        BLOCK_K=64, BLOCK_R=_block_r(stack.r_max),
    )
    return y


def bgmv_expand(y: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor) -> torch.Tensor:
    """BGMV expand (one program per row and out tile): same result as :func:`sgmv_expand`."""
    if not segments.host_bounds:
        return out
    block_n = 128
    b = stack.b
    _bgmv_expand_kernel[(y.shape[0], triton.cdiv(stack.out_features, block_n))](
        y, b, out, segments.row_adapters.to(y.device), stack.ranks, stack.scales,
        stack.out_features,
        y.stride(0), y.stride(1), b.stride(0), b.stride(1), b.stride(2), out.stride(0), out.stride(1),
        BLOCK_N=block_n, BLOCK_R=_block_r(stack.r_max),
    )
    return out


def segmented_lora(x: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor) -> torch.Tensor:
    """``out += scale_i * (x @ A_i) @ B_i`` per segment: BGMV for tiny segments, SGMV otherwise."""
    if segments.max_rows <= BGMV_MAX_SEGMENT_ROWS:
        return bgmv_expand(bgmv_shrink(x, stack, segments), stack, segments, out)
    return sgmv_expand(sgmv_shrink(x, stack, segments), stack, segments, out)
