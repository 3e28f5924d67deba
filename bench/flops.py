"""The machine's limit for the engine benchmark: FLOPs the engine must do, and the matmul rate this CPU reaches.

FLOPs are counted from the model's shape (BERT-like encoder: ``d`` hidden, ``f`` intermediate, ``N``
layers), the adapters' depths and ranks, and each record's real token count ``t`` (no padding); a
multiply-add is 2 FLOPs. Per record and layer: the six linear maps ``2t(4d^2 + 2df)``, attention scores
and values ``4t^2 d``. What the engine *must* do for ``K`` adapters whose lowest adapted layer is ``L``:
layers ``0..L-1`` once; layers ``L..N-2`` ``K`` times; the last layer ``K`` times at the pooled token only
(key and value over all ``t`` tokens, query, attention output and MLP at one token); the pooler and head
``K`` times; every LoRA ``2r(in+out)`` per token its layer must process. Softmax, layer norms, GELU and
the gathers are not counted (they are not matmuls), so MFU is a conservative share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from assay.engine.adapters import LoraAdapter
from assay.engine.model import Architecture

ALL_TOKENS_IN_LAST_LAYER = ("attention.self.key", "attention.self.value")


def encoder_dims(config) -> tuple[int, int, int]:
    """(hidden, intermediate, layers) of a BERT-like config."""
    return config.hidden_size, config.intermediate_size, config.num_hidden_layers


def layer_flops(t: np.ndarray, d: int, f: int) -> np.ndarray:
    """One whole encoder layer on ``t`` tokens (per record)."""
    return 2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d


def last_layer_pooled_flops(t: np.ndarray, d: int, f: int) -> np.ndarray:
    """The last layer when only the pooled (first) token is read: K, V over all tokens, the rest at one."""
    return 2 * t * 2 * d * d + 2 * (2 * d * d + 2 * d * f) + 4 * t * d


def _lora_tokens(path: str, arch: Architecture, t: np.ndarray) -> np.ndarray:
    """Tokens per record the layer at ``path`` must process in the engine (pooled-only last layer)."""
    stage = arch.stage_of(path)
    if stage == arch.n_layers or (stage == arch.n_layers - 1 and not path.endswith(ALL_TOKENS_IN_LAST_LAYER)):
        return np.ones_like(t)  # the pooler, or the last layer past its keys and values: one token
    return t


def engine_flops(lengths: Sequence[int], config, arch: Architecture, adapters: Sequence[LoraAdapter],
                 fan_stage: int) -> dict[str, float]:
    """FLOPs the engine must do for these records (real token counts) and adapters: total and its parts."""
    t = np.asarray(lengths, dtype=np.float64)
    d, f, n = encoder_dims(config)
    if not 0 <= fan_stage < n:
        raise ValueError(f"fan stage {fan_stage}: the count covers adapters on layers 0..{n - 1}")
    shared = fan_stage * layer_flops(t, d, f).sum()
    per_adapter = ((n - 1 - fan_stage) * layer_flops(t, d, f).sum() + last_layer_pooled_flops(t, d, f).sum()
                   + len(t) * (2 * d * d + 2 * d * 2))  # + pooler and head at one token
    lora = 0.0
    for adapter in adapters:
        for path, w in adapter.modules.items():
            rank, fan_in, fan_out = w.a.shape[1], w.a.shape[0], w.b.shape[1]
            lora += (2 * rank * (fan_in + fan_out) * _lora_tokens(path, arch, t)).sum()
    k = len(adapters)
    return {"total": float(shared + k * per_adapter + lora), "shared_layers": float(shared),
            "per_question_layers": float(k * per_adapter), "lora": float(lora)}


def base_flops(lengths: Sequence[int], config) -> float:
    """FLOPs of the plain base forward (every layer whole, real tokens) plus pooler and head."""
    t = np.asarray(lengths, dtype=np.float64)
    d, f, n = encoder_dims(config)
    return float(n * layer_flops(t, d, f).sum() + len(t) * (2 * d * d + 4 * d))


def matmul_rates(config, rows: Sequence[int], dtype: torch.dtype = torch.float32, repeats: int = 7,
                 min_seconds: float = 0.05) -> list[dict[str, float]]:
    """FLOP/s of ``F.linear`` at the engine's linear shapes (``rows`` tokens x in -> out), best of ``repeats``."""
    d, f, _ = encoder_dims(config)
    out = []
    g = torch.Generator().manual_seed(0)
    for in_f, out_f in ((d, d), (d, f), (f, d)):
        w = torch.randn(out_f, in_f, generator=g, dtype=torch.float32).to(dtype)
        for m in rows:
            x = torch.randn(m, in_f, generator=g, dtype=torch.float32).to(dtype)
            flops = 2 * m * in_f * out_f
            calls = max(1, int(min_seconds * 20e9 / flops))  # ~min_seconds at 20 GFLOP/s
            wall, cpu = _best_seconds(x, w, calls, repeats)
            out.append({"rows": m, "in": in_f, "out": out_f, "gflops_wall": flops / wall / 1e9,
                        "gflops_cpu": flops / cpu / 1e9})
    return out


@torch.inference_mode()
def _best_seconds(x: torch.Tensor, w: torch.Tensor, calls: int, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process-CPU seconds of one ``F.linear(x, w)`` (``calls`` per timing)."""
    torch.nn.functional.linear(x, w)
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            torch.nn.functional.linear(x, w)
        wall = min(wall, (time.perf_counter() - start) / calls)
        cpu = min(cpu, (time.process_time() - start_cpu) / calls)
    return wall, cpu


def probe_rate(shape: dict[str, float], repeats: int = 3) -> dict[str, float]:
    """GFLOP/s (wall and CPU) of one ``F.linear`` shape (a row of :func:`matmul_rates`) now, under this load."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(int(shape["rows"]), int(shape["in"]), generator=g)
    w = torch.randn(int(shape["out"]), int(shape["in"]), generator=g)
    flops = 2 * x.shape[0] * x.shape[1] * w.shape[0]
    wall, cpu = _best_seconds(x, w, 5, repeats)
    return {"wall": flops / wall / 1e9, "cpu": flops / cpu / 1e9}
