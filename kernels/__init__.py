"""assay.kernels: segmented multi-LoRA product (SGMV/BGMV Triton kernels + PyTorch fallback)."""

from assay.kernels.lora import (
    LoraStack,
    Segments,
    segmented_lora,
    sgmv_expand,
    sgmv_shrink,
    triton_available,
)

__all__ = ["LoraStack", "Segments", "segmented_lora", "sgmv_expand", "sgmv_shrink", "triton_available"]
