"""The baselines the engine is measured against (bench/bench_engine.py), each the way a user would run it.

Every baseline gets the records as token ids from the engine's own ``encode`` (same ``max_length``, same
truncation) in length-sorted batches cut by the engine's own ``token_batches`` under the same token
budget (padded tokens x copies per forward), so none pads more than the engine. Tokenising and batching
are inside the timed part of every method, as they are for the engine. Each returns P(yes)
``[records, questions]`` in input order and the seconds it took.

1. ``peft_one_at_a_time``: one ``PeftModel`` holding every adapter, ``set_adapter`` per question;
2. ``peft_mixed``: PEFT's mixed-adapter batch, each record repeated per question, ``adapter_names=``;
3. ``peft_shared_lower``: the project's cached-states path (``assay.distill.cache``): the layers below the
   lowest adapted one run once per record (``LowerLayerCache.fill``, timed), then ``upper_layers_only``
   runs each question's adapter on the cached states;
4. ``merged_per_question``: LoRA merged into a copy of the base per question (``merge_and_unload``), what
   serving each question as its own model gives; the merge is a deployment step, timed apart;
5. ``base_alone``: the base with no adapter, one pass: the floor.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from assay.distill.cache import LowerLayerCache, upper_layers_only
from assay.engine.batching import Batch, encode, token_batches
from assay.engine.model import architecture


class Clock:
    """Wall-clock and process CPU seconds, accumulated over the ``with`` blocks it times."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._start = (0.0, 0.0)

    def __enter__(self) -> Clock:
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]


@dataclass(frozen=True)
class Workload:
    """The records and the batching settings every method shares."""

    texts: list[str]
    tokenizer: Any
    max_length: int
    batch_tokens: int
    pad_id: int

    def batches(self, copies: int) -> list[Batch]:
        """Length-sorted batches with ``records x longest x copies <= batch_tokens`` (the engine's rule)."""
        encoded = encode(self.tokenizer, self.texts, self.max_length)
        return list(token_batches(encoded.ids, self.batch_tokens, copies, self.pad_id))

    def subset(self, n: int) -> Workload:
        """The first ``n`` records (warm-up runs)."""
        return Workload(self.texts[:n], self.tokenizer, self.max_length, self.batch_tokens, self.pad_id)


def p_yes(logits: torch.Tensor) -> np.ndarray:
    """P(yes) = softmax(logits)[:, 1] as float32."""
    return torch.softmax(logits.float(), -1)[:, 1].cpu().numpy()


def load_base(base: Path) -> nn.Module:
    """The base as ``AutoModelForSequenceClassification`` (2 labels, fp32, eval), its unused head quiet."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2,
                                                                                dtype=torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval()


def load_peft(base: Path, adapters: dict[str, Path]):
    """One ``PeftModel`` with every adapter loaded (adapter names = question ids)."""
    from peft import PeftModel

    (first, path), *rest = adapters.items()
    peft = PeftModel.from_pretrained(load_base(base), str(path), adapter_name=first)
    for qid, adapter_path in rest:
        peft.load_adapter(str(adapter_path), adapter_name=qid)
    return peft.eval()


@torch.inference_mode()
def peft_one_at_a_time(peft, work: Workload, qids: Sequence[str]) -> tuple[np.ndarray, Clock]:
    """(1) ``set_adapter`` per question, every record through the whole model, batches tokenised once."""
    out = np.empty((len(work.texts), len(qids)), dtype=np.float32)
    with Clock() as clock:
        batches = work.batches(copies=1)
        for k, qid in enumerate(qids):
            peft.set_adapter(qid)
            for b in batches:
                out[b.indices, k] = p_yes(peft(input_ids=b.input_ids, attention_mask=b.attention_mask).logits)
    return out, clock


@torch.inference_mode()
def peft_mixed(peft, work: Workload, qids: Sequence[str]) -> tuple[np.ndarray, Clock]:
    """(2) Each batch repeated once per question (adapter-major) with ``adapter_names=`` per row."""
    k = len(qids)
    out = np.empty((len(work.texts), k), dtype=np.float32)
    with Clock() as clock:
        for b in work.batches(copies=k):
            n = len(b.indices)
            names = [qid for qid in qids for _ in range(n)]
            logits = peft(input_ids=b.input_ids.repeat(k, 1), attention_mask=b.attention_mask.repeat(k, 1),
                          adapter_names=names).logits
            out[b.indices] = p_yes(logits).reshape(k, n).T
    return out, clock


@torch.inference_mode()
def peft_shared_lower(peft, cache_model: nn.Module, work: Workload, qids: Sequence[str],
                      layer: int) -> tuple[np.ndarray, Clock]:
    """(3) Layers ``0..layer-1`` once per record (the lower-layer cache), each adapter on the cached states."""
    out = np.empty((len(work.texts), len(qids)), dtype=np.float32)
    with Clock() as clock, upper_layers_only(peft.base_model.model, cache_arch(cache_model), layer) as feed:
        cache = LowerLayerCache(cache_model, work.tokenizer, work.max_length, layer, base_sha256="bench")
        cache.fill(work.texts, progress=False)
        ids = [cache.tokens(t).tolist() for t in work.texts]
        groups = [b.indices for b in token_batches(ids, work.batch_tokens, 1, work.pad_id)]
        for k, qid in enumerate(qids):
            peft.set_adapter(qid)
            for index in groups:
                batch = cache.batch([work.texts[i] for i in index])
                feed.value = batch.hidden
                try:
                    logits = peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                finally:
                    feed.value = None
                out[index, k] = p_yes(logits)
    return out, clock


@torch.inference_mode()
def merged_per_question(base_model: nn.Module, adapters: dict[str, Path], work: Workload,
                        qids: Sequence[str]) -> tuple[np.ndarray, Clock, Clock]:
    """(4) Per question a copy of the base with the LoRA merged in; (P, scoring clock, merging clock)."""
    from peft import PeftModel

    scoring, merging = Clock(), Clock()
    with scoring:
        batches = work.batches(copies=1)
    out = np.empty((len(work.texts), len(qids)), dtype=np.float32)
    for k, qid in enumerate(qids):
        with merging:
            model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(adapters[qid])).merge_and_unload()
        with scoring:
            for b in batches:
                out[b.indices, k] = p_yes(model.eval()(input_ids=b.input_ids, attention_mask=b.attention_mask).logits)
        del model
    return out, scoring, merging


@torch.inference_mode()
def base_alone(base_model: nn.Module, work: Workload) -> tuple[np.ndarray, Clock]:
    """(5) The base with no adapter, one pass over the records: the floor."""
    out = np.empty((len(work.texts), 1), dtype=np.float32)
    with Clock() as clock:
        for b in work.batches(copies=1):
            out[b.indices, 0] = p_yes(base_model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits)
    return out, clock


def cache_arch(model: nn.Module):
    """The architecture (module paths) of the unwrapped base the cache runs."""
    return architecture(model)
