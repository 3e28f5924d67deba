"""PyTorch backend of the segmented LoRA product: one matmul per non-empty adapted segment.

This is the CPU fallback and the reference the Triton kernels are tested against. It uses the
host copies of segment bounds, ranks and scales cached on :class:`Segments` / :class:`LoraStack`,
so it never synchronises with the device. Matmuls run in the input dtype (fp32 accumulation inside
the BLAS), the shrink result is stored as float32 like the Triton kernel's.
"""

from __future__ import annotations

import torch

from assay.kernels.lora import LoraStack, Segments


def shrink(x: torch.Tensor, stack: LoraStack, segments: Segments) -> torch.Tensor:
    """``[rows, r_max]`` float32: ``x[seg] @ a[i, :, :r_i]`` per adapted segment, zeros elsewhere."""
    y = torch.zeros((x.shape[0], stack.r_max), dtype=torch.float32, device=x.device)
    for lo, hi, i in segments.host_bounds:
        r = stack.host_ranks[i]
        y[lo:hi, :r] = x[lo:hi] @ stack.a[i, :, :r]
    return y


def expand(y: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor) -> torch.Tensor:
    """``out[seg] += scale_i * y[seg, :r_i] @ b[i, :r_i]`` per adapted segment, in place."""
    for lo, hi, i in segments.host_bounds:
        r = stack.host_ranks[i]
        out[lo:hi].addmm_(y[lo:hi, :r].to(stack.b.dtype), stack.b[i, :r], alpha=stack.host_scales[i])
    return out
