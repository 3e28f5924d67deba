"""bench/flops.py: the FLOPs the engine must do, counted from the model shape, equal the FLOPs torch's own
counter sees in a real engine forward (MiniLM, real PEFT adapters, eager attention, no padding), at every
adapter depth; degenerate inputs give zero or a clear error. MFU in docs/PERFORMANCE.md rests on this count."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import flops  # noqa: E402
from engine_fixtures import make_adapter, minilm, one_torch_thread  # noqa: E402, F401  (autouse)

from assay.engine.adapters import load_adapter  # noqa: E402
from assay.engine.model import MultiLoraModel  # noqa: E402
from assay.schemas.registry import AdapterVersion  # noqa: E402


def _addmm_in_place(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``out.addmm_(a, b)`` (the LoRA expand): the counter has no formula for the in-place form."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def engine(tmp_path: Path, layers: list[int] | None, count: int = 3) -> MultiLoraModel:
    base = minilm()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=2, attn_implementation="eager")  # attention as matmuls the counter sees
    mlm = MultiLoraModel(model)
    for i in range(count):
        path = make_adapter(base, tmp_path / f"q{i}", seed=i, rank=4 + 4 * i, target_modules=["query", "key", "value",
                            "dense"], layers_to_transform=layers)
        mlm.add(load_adapter(AdapterVersion(f"q{i}", 1, path, {}), head_name="classifier"))
    return mlm


@pytest.mark.parametrize("layers", [[5], [4, 5], None], ids=["top1", "top2", "full"])
def test_count_equals_torch_flop_counter(tmp_path, layers):
    mlm = engine(tmp_path, layers)
    records, tokens = 3, 17
    ids = torch.randint(1000, 2000, (records, tokens), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_in_place}) as counter:
        mlm.probabilities(ids, torch.ones_like(ids))
    counted = flops.engine_flops([tokens] * records, mlm.config, mlm.arch, list(mlm.adapters.values()),
                                 mlm.fan_stage)
    assert counted["total"] == counter.get_total_flops()
    shared_layers = 0 if layers is None else layers[0]
    assert counted["shared_layers"] == shared_layers * flops.layer_flops(np.float64(tokens), 384, 1536) * records
    assert counted["lora"] > 0


def test_degenerate_inputs(tmp_path):
    mlm = engine(tmp_path, [5], count=1)
    assert flops.engine_flops([], mlm.config, mlm.arch, list(mlm.adapters.values()), 5)["total"] == 0
    with pytest.raises(ValueError, match="fan stage 6"):
        flops.engine_flops([10], mlm.config, mlm.arch, list(mlm.adapters.values()), 6)
    assert flops.base_flops([], mlm.config) == 0
