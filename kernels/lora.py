"""Segmented multi-LoRA product (Punica SGMV / S-LoRA style): public types and dispatch.

The batch engine flattens a batch into rows of hidden size ``in``; contiguous runs of rows
(segments) share one adapter, or none (adapter ``-1``). For one adapted linear layer this module
computes ``out[rows of s] += scale_i * (x[rows of s] @ A_i) @ B_i`` for every segment ``s`` with
adapter ``i``. Two backends compute the same thing: ``torch`` (a grouped-matmul loop, the CPU
fallback and the test reference, see :mod:`assay.kernels.lora_torch`) and ``triton``
(:mod:`assay.kernels.lora_triton`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True, eq=False)
class LoraStack:
    """All adapters of ONE linear layer, zero-padded to the largest rank ``r_max``.

    ``a``: ``[n_adapters, in_features, r_max]`` (``x @ a[i]`` is the shrink);
    ``b``: ``[n_adapters, r_max, out_features]``; ``scales``: ``[n_adapters]`` float32;
    ``ranks``: ``[n_adapters]`` int32 — columns of ``a`` / rows of ``b`` beyond the rank are zero
    and are skipped by the kernels. Host copies of ranks and scales are taken once here.
    """

    a: torch.Tensor
    b: torch.Tensor
    scales: torch.Tensor
    ranks: torch.Tensor
    host_ranks: tuple[int, ...] = field(init=False, repr=False)
    host_scales: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        a, b, scales, ranks = self.a, self.b, self.scales, self.ranks
        if a.dim() != 3 or b.dim() != 3:
            raise ValueError(f"LoraStack: a and b must be 3-D, got a{tuple(a.shape)} b{tuple(b.shape)}")
        n, _, r_max = a.shape
        if b.shape[0] != n or b.shape[1] != r_max:
            raise ValueError(f"LoraStack: b{tuple(b.shape)} does not match a{tuple(a.shape)} "
                             "(expected [n_adapters, r_max, out_features])")
        if a.dtype != b.dtype or a.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"LoraStack: a and b must share a float dtype, got {a.dtype} and {b.dtype}")
        if a.device != b.device or scales.device != a.device or ranks.device != a.device:
            raise ValueError("LoraStack: a, b, scales and ranks must be on the same device")
        if scales.shape != (n,) or scales.dtype != torch.float32:
            raise ValueError(f"LoraStack: scales must be float32 [{n}], got {scales.dtype} {tuple(scales.shape)}")
        if ranks.shape != (n,) or ranks.dtype != torch.int32:
            raise ValueError(f"LoraStack: ranks must be int32 [{n}], got {ranks.dtype} {tuple(ranks.shape)}")
        host_ranks = tuple(int(r) for r in ranks.tolist())
        if any(r < 0 or r > r_max for r in host_ranks):
            raise ValueError(f"LoraStack: ranks {host_ranks} must lie in [0, r_max={r_max}]")
        object.__setattr__(self, "host_ranks", host_ranks)
        object.__setattr__(self, "host_scales", tuple(float(s) for s in scales.tolist()))

    @property
    def n_adapters(self) -> int:
        return self.a.shape[0]

    @property
    def in_features(self) -> int:
        return self.a.shape[1]

    @property
    def out_features(self) -> int:
        return self.b.shape[2]

    @property
    def r_max(self) -> int:
        return self.a.shape[2]

    @classmethod
    def from_pairs(
        cls,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        scales: list[float],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> LoraStack:
        """Stack ``(A_i [in, r_i], B_i [r_i, out])`` pairs, zero-padding every rank to ``max r_i``.

        ``dtype``/``device`` default to those of the first ``A``.
        """
        if not pairs:
            raise ValueError("LoraStack.from_pairs: need at least one (A, B) pair")
        if len(scales) != len(pairs):
            raise ValueError(f"LoraStack.from_pairs: {len(pairs)} pairs but {len(scales)} scales")
        in_f, out_f = pairs[0][0].shape[0], pairs[0][1].shape[-1]
        for i, (a_i, b_i) in enumerate(pairs):
            if a_i.dim() != 2 or b_i.dim() != 2 or a_i.shape[1] != b_i.shape[0] or a_i.shape[1] < 1:
                raise ValueError(f"LoraStack.from_pairs: pair {i} has A{tuple(a_i.shape)} B{tuple(b_i.shape)}; "
                                 "expected A [in, r] and B [r, out] with r >= 1")
            if a_i.shape[0] != in_f or b_i.shape[1] != out_f:
                raise ValueError(f"LoraStack.from_pairs: pair {i} is [{a_i.shape[0]}->{b_i.shape[1]}], "
                                 f"pair 0 is [{in_f}->{out_f}]")
        dtype = dtype or pairs[0][0].dtype
        device = torch.device(device) if device is not None else pairs[0][0].device
        ranks = [a_i.shape[1] for a_i, _ in pairs]
        r_max = max(ranks)
        a = torch.zeros((len(pairs), in_f, r_max), dtype=dtype, device=device)
        b = torch.zeros((len(pairs), r_max, out_f), dtype=dtype, device=device)
        for i, (a_i, b_i) in enumerate(pairs):
            a[i, :, : ranks[i]] = a_i.to(device=device, dtype=dtype)
            b[i, : ranks[i]] = b_i.to(device=device, dtype=dtype)
        return cls(
            a=a,
            b=b,
            scales=torch.tensor([float(s) for s in scales], dtype=torch.float32, device=device),
            ranks=torch.tensor(ranks, dtype=torch.int32, device=device),
        )


@dataclass(frozen=True, eq=False)
class Segments:
    """Contiguous row segments of a flattened batch, one adapter each.

    ``indptr``: ``[n_segments + 1]`` int32 row boundaries (segment ``s`` is rows
    ``indptr[s]:indptr[s+1]``; empty segments allowed); ``adapter``: ``[n_segments]`` int32 index
    into the :class:`LoraStack`, or ``-1`` for "no adapter" (rows untouched). Validated once on
    construction (one host sync), which also caches ``n_rows``/``max_rows`` so that the per-layer
    calls never sync. Build it on the device of the activations to avoid per-call copies.
    """

    indptr: torch.Tensor
    adapter: torch.Tensor
    n_rows: int = field(init=False)
    max_rows: int = field(init=False)
    max_adapter: int = field(init=False)
    host_bounds: tuple[tuple[int, int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        indptr, adapter = self.indptr, self.adapter
        if indptr.dtype != torch.int32 or adapter.dtype != torch.int32:
            raise ValueError(f"Segments: indptr and adapter must be int32, got {indptr.dtype} and {adapter.dtype}")
        if indptr.dim() != 1 or adapter.dim() != 1 or indptr.numel() != adapter.numel() + 1:
            raise ValueError(f"Segments: need indptr [n+1] and adapter [n], got {tuple(indptr.shape)} "
                             f"and {tuple(adapter.shape)}")
        if indptr.device != adapter.device:
            raise ValueError("Segments: indptr and adapter must be on the same device")
        bounds, ids = indptr.tolist(), adapter.tolist()
        if bounds[0] != 0 or any(hi < lo for lo, hi in zip(bounds, bounds[1:])):
            raise ValueError(f"Segments: indptr must start at 0 and be non-decreasing, got {bounds[:8]}...")
        if any(i < -1 for i in ids):
            raise ValueError("Segments: adapter ids must be >= -1 (-1 = no adapter)")
        lengths = [hi - lo for lo, hi in zip(bounds, bounds[1:])]
        object.__setattr__(self, "n_rows", bounds[-1])
        object.__setattr__(self, "max_rows", max(lengths, default=0))
        object.__setattr__(self, "max_adapter", max(ids, default=-1))
        object.__setattr__(self, "host_bounds", tuple(
            (lo, hi, i) for lo, hi, i in zip(bounds, bounds[1:], ids) if hi > lo and i >= 0))

    @property
    def n_segments(self) -> int:
        return self.adapter.numel()

    @classmethod
    def from_row_adapters(cls, row_adapter: torch.Tensor) -> Segments:
        """Run-length encode a per-row adapter id vector (``-1`` = no adapter) into segments."""
        if row_adapter.dim() != 1 or row_adapter.is_floating_point():
            raise ValueError(f"Segments.from_row_adapters: need a 1-D integer tensor, got "
                             f"{row_adapter.dtype} {tuple(row_adapter.shape)}")
        ids, counts = torch.unique_consecutive(row_adapter, return_counts=True)
        indptr = torch.zeros(ids.numel() + 1, dtype=torch.int32, device=row_adapter.device)
        torch.cumsum(counts, 0, out=indptr[1:])
        return cls(indptr=indptr, adapter=ids.to(torch.int32))

    @cached_property
    def row_adapters(self) -> torch.Tensor:
        """Per-row adapter id ``[n_rows]`` int32 (inverse of :meth:`from_row_adapters`); cached."""
        lengths = (self.indptr[1:] - self.indptr[:-1]).to(torch.int64)
        return torch.repeat_interleave(self.adapter, lengths, output_size=self.n_rows)


def triton_available() -> bool:
    """True when the ``triton`` package is importable (kernels also need CUDA or TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def check_inputs(x: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` on shape / dtype / device mismatches between the operands."""
    if x.dim() != 2 or x.shape[1] != stack.in_features:
        raise ValueError(f"segmented LoRA: x must be [rows, {stack.in_features}], got {tuple(x.shape)}")
    if x.dtype != stack.a.dtype:
        raise ValueError(f"segmented LoRA: x is {x.dtype} but the LoraStack is {stack.a.dtype}")
    if x.device != stack.a.device:
        raise ValueError(f"segmented LoRA: x is on {x.device} but the LoraStack is on {stack.a.device}")
    if segments.n_rows != x.shape[0]:
        raise ValueError(f"segmented LoRA: segments cover {segments.n_rows} rows but x has {x.shape[0]}")
    if segments.max_adapter >= stack.n_adapters:
        raise ValueError(f"segmented LoRA: adapter id {segments.max_adapter} out of range "
                         f"(stack has {stack.n_adapters})")
    if out is not None:
        if out.shape != (x.shape[0], stack.out_features):
            raise ValueError(f"segmented LoRA: out must be [{x.shape[0]}, {stack.out_features}], "
                             f"got {tuple(out.shape)}")
        if out.device != x.device or out.dtype != x.dtype:
            raise ValueError(f"segmented LoRA: out must be {x.dtype} on {x.device} like x, "
                             f"got {out.dtype} on {out.device}")


def _resolve(backend: Backend, x: torch.Tensor) -> Literal["triton", "torch"]:
    if backend == "auto":
        return "triton" if x.is_cuda and triton_available() else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"segmented LoRA: unknown backend {backend!r} (auto, triton, torch)")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("segmented LoRA: backend='triton' but triton is not installed")
        from triton import knobs

        if not x.is_cuda and not knobs.runtime.interpret:
            raise RuntimeError(f"segmented LoRA: the Triton kernels need CUDA tensors (x is on {x.device}); "
                               "use backend='torch', or TRITON_INTERPRET=1 to run them interpreted on CPU")
    return backend


def sgmv_shrink(x: torch.Tensor, stack: LoraStack, segments: Segments, backend: Backend = "auto") -> torch.Tensor:
    """``y[rows of s, :] = x[rows of s] @ a[adapter_s]`` → ``[rows, r_max]`` float32 (zeros elsewhere)."""
    check_inputs(x, stack, segments)
    if _resolve(backend, x) == "triton":
        from assay.kernels import lora_triton

        return lora_triton.sgmv_shrink(x, stack, segments)
    from assay.kernels import lora_torch

    return lora_torch.shrink(x, stack, segments)


def sgmv_expand(
    y: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor, backend: Backend = "auto"
) -> torch.Tensor:
    """``out[rows of s] += scale_i * y[rows of s, :r_i] @ b[i, :r_i]`` in place; returns ``out``."""
    if y.dim() != 2 or y.shape[1] != stack.r_max or y.dtype != torch.float32:
        raise ValueError(f"sgmv_expand: y must be float32 [rows, {stack.r_max}], got {y.dtype} {tuple(y.shape)}")
    if segments.max_adapter >= stack.n_adapters:
        raise ValueError(f"sgmv_expand: adapter id {segments.max_adapter} out of range (stack has {stack.n_adapters})")
    if (segments.n_rows != y.shape[0] or out.shape != (y.shape[0], stack.out_features)
            or not out.device == y.device == stack.b.device or out.dtype != stack.b.dtype):
        raise ValueError(f"sgmv_expand: y{tuple(y.shape)} / out{tuple(out.shape)} do not match "
                         f"{segments.n_rows} rows x {stack.out_features} out_features, {stack.b.dtype} on "
                         f"{stack.b.device}")
    if _resolve(backend, y) == "triton":
        from assay.kernels import lora_triton

        return lora_triton.sgmv_expand(y, stack, segments, out)
    from assay.kernels import lora_torch

    return lora_torch.expand(y, stack, segments, out)


def segmented_lora(
    x: torch.Tensor, stack: LoraStack, segments: Segments, out: torch.Tensor, backend: Backend = "auto"
) -> torch.Tensor:
    """``out += scale_i * (x @ A_i) @ B_i`` per segment, in place; returns ``out``.

    ``backend="auto"`` uses Triton when ``x`` is on CUDA and triton is importable, else PyTorch.
    The Triton backend picks the SGMV kernels, or the BGMV (one row per program) kernels when
    segments hold at most :data:`~assay.kernels.lora_triton.BGMV_MAX_SEGMENT_ROWS` rows.
    """
    check_inputs(x, stack, segments, out)
    if _resolve(backend, x) == "triton":
        from assay.kernels import lora_triton

        return lora_triton.segmented_lora(x, stack, segments, out)
    from assay.kernels import lora_torch

    return lora_torch.expand(lora_torch.shrink(x, stack, segments), stack, segments, out)
