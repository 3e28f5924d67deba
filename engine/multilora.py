"""MultiLoraLinear: a base ``nn.Linear`` plus every loaded adapter, each batch row using its own.

The engine lays a fanned-out batch out adapter-major: with ``K`` active adapters and ``B`` records,
rows ``[k*B, (k+1)*B)`` (times the sequence length once flattened) belong to adapter ``k``. Each
wrapped layer computes ``base(x)`` and adds ``scale_k * (x @ A_k) @ B_k`` per contiguous segment
through :func:`assay.kernels.segmented_lora` (Triton on CUDA, grouped matmuls on CPU). Adapters
are added and removed by rebuilding the per-layer stacks; base weights are never modified.
"""

from __future__ import annotations

import torch
from torch import nn

from assay.kernels import LoraStack, Segments, segmented_lora


class RowGroups:
    """The adapter layout of the batch being run: ``copies`` equal groups of rows, adapter-major.

    Builds (and caches for the current batch) the :class:`Segments` of each distinct mapping from
    active adapter to a layer's stack slot, so each layer call is one kernel launch per segment.
    """

    def __init__(self) -> None:
        self.copies = 0
        self._cache: dict[tuple[tuple[int, ...], int], Segments] = {}

    def start(self, copies: int) -> None:
        """Begin a batch whose adapted layers see ``copies`` groups of rows."""
        self.copies = copies
        self._cache.clear()

    def stop(self) -> None:
        """End the batch (layers called outside a batch raise)."""
        self.copies = 0
        self._cache.clear()

    def segments(self, slots: tuple[int, ...], n_rows: int, device: torch.device) -> Segments:
        """Segments giving rows of group ``k`` the stack slot ``slots[k]`` (``-1`` = none)."""
        if self.copies != len(slots) or n_rows % self.copies:
            raise RuntimeError(f"MultiLoraLinear called with {n_rows} rows outside a fanned-out batch of "
                               f"{len(slots)} adapter groups")
        key = (slots, n_rows)
        cached = self._cache.get(key)
        if cached is None:
            group = n_rows // self.copies
            indptr = torch.arange(0, n_rows + 1, group, dtype=torch.int32, device=device)
            cached = Segments(indptr=indptr, adapter=torch.tensor(slots, dtype=torch.int32, device=device))
            self._cache[key] = cached
        return cached


class MultiLoraLinear(nn.Module):
    """``base(x)`` plus, per row group, the LoRA delta of that group's adapter (if it adapts this layer)."""

    def __init__(self, base: nn.Linear, groups: RowGroups) -> None:
        super().__init__()
        self.base = base
        self.groups = groups
        self.stack: LoraStack | None = None
        self.slots: tuple[int, ...] = ()

    def set_adapters(self, per_adapter: list[tuple[torch.Tensor, torch.Tensor, float] | None]) -> None:
        """Rebuild the stack: entry ``k`` is adapter ``k``'s ``(A [in, r], B [r, out], scale)`` or ``None``."""
        pairs, scales, slots = [], [], []
        for entry in per_adapter:
            if entry is None:
                slots.append(-1)
                continue
            a, b, scale = entry
            if a.shape[0] != self.base.in_features or b.shape[1] != self.base.out_features:
                raise ValueError(f"LoRA A{tuple(a.shape)} B{tuple(b.shape)} does not fit a Linear "
                                 f"{self.base.in_features}->{self.base.out_features}")
            slots.append(len(pairs))
            pairs.append((a, b))
            scales.append(scale)
        weight = self.base.weight
        self.stack = LoraStack.from_pairs(pairs, scales, dtype=weight.dtype, device=weight.device) if pairs else None
        self.slots = tuple(slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.stack is None:
            return out
        x2d = x.reshape(-1, x.shape[-1])
        out2d = out.view(-1, out.shape[-1])
        segmented_lora(x2d, self.stack, self.groups.segments(self.slots, x2d.shape[0], x.device), out2d)
        return out
