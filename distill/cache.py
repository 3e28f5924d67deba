"""Shared lower layers: compute the hidden states entering layer L once per record, train on top of them.

With every adapter confined to layers ``L..N-1`` (PEFT ``layers_to_transform``), layers ``0..L-1``
and the embeddings give the same output for every question. :class:`LowerLayerCache` runs them once
per record (no grad, eval mode) and keeps each record's unpadded states, keyed by base-model hash,
``max_length`` and ``L``. :func:`upper_layers_only` then makes the model's own forward start at
layer ``L``: the embedding module is swapped for one that returns the cached states and the layer list
is cut to ``L..N-1``, so the attention mask, pooling and head are still the model's own code, and
the PEFT model trained this way is saved unchanged (standard adapter, full model).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from assay.engine.batching import Batch, pad
from assay.engine.model import Architecture, architecture

CACHE_BATCH_TOKENS = 8_192


def embedding_module_name(arch: Architecture) -> str:
    """Attribute of ``arch.inner`` holding the embedding module the forward starts from."""
    return "embeddings" if arch.kind == "encoder" else "embed_tokens"


class _Captured(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


class _Feed(nn.Module):
    """Stands in for the embedding module: returns the hidden states set before the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("upper_layers_only: no cached hidden states fed for this forward")
        return self.value


class LowerLayerCache:
    """Token ids and the hidden states entering layer ``layer`` of each text, computed once."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int, layer: int, base_sha256: str,
                 device: str = "cpu") -> None:
        self.model, self.tokenizer, self.max_length, self.layer = model, tokenizer, max_length, layer
        self.arch = architecture(model)
        if not 0 <= layer < self.arch.n_layers:
            raise ValueError(f"cache layer {layer} outside 0..{self.arch.n_layers - 1}")
        self.key = (base_sha256, max_length, layer)
        self.device = torch.device(device)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self._ids: dict[str, torch.Tensor] = {}
        self._hidden: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._hidden)

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self._hidden.values())

    def tokens(self, text: str) -> torch.Tensor:
        return self._ids[text]

    def hidden(self, text: str) -> torch.Tensor:
        return self._hidden[text]

    def fill(self, texts: Sequence[str], progress: bool = True) -> float:
        """Tokenise and run the lower layers for every text not cached yet; returns the seconds it took."""
        started = time.perf_counter()
        new = sorted({t for t in texts if t not in self._hidden})
        if not new:
            return 0.0
        encoded = self.tokenizer(new, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(new)), key=lambda i: len(encoded[i]))
        stage = self.arch.stages[self.layer]

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            raise _Captured(args[0] if args else kwargs["hidden_states"])

        handle = stage.register_forward_pre_hook(capture, with_kwargs=True)
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(total=len(new), desc=f"lower layers 0..{self.layer - 1} (cache)", unit="rec",
                   disable=not progress, leave=False)
        try:
            start = 0
            while start < len(order):
                end = start + 1
                while end < len(order) and (end - start + 1) * len(encoded[order[end]]) <= CACHE_BATCH_TOKENS:
                    end += 1
                chunk = order[start:end]
                ids = [torch.tensor(encoded[i], dtype=torch.long) for i in chunk]
                batch = pad(ids, self.pad_id)
                try:
                    with torch.inference_mode():
                        self.arch.inner(input_ids=batch.input_ids.to(self.device),
                                        attention_mask=batch.attention_mask.to(self.device), use_cache=False)
                    raise RuntimeError("the lower-layer hook did not fire")
                except _Captured as captured:
                    states = captured.hidden.float().cpu()
                for row, i in enumerate(chunk):
                    self._ids[new[i]] = ids[row]
                    self._hidden[new[i]] = states[row, :len(ids[row])].clone()
                bar.update(len(chunk))
                start = end
        finally:
            handle.remove()
            bar.close()
            self.model.train(was_training)
        return time.perf_counter() - started

    def batch(self, texts: Sequence[str]) -> Batch:
        """A padded batch of cached texts (call :meth:`fill` first)."""
        return pad([self._ids[t] for t in texts], self.pad_id, hidden=[self._hidden[t] for t in texts])


@contextmanager
def upper_layers_only(model: nn.Module, arch: Architecture, layer: int) -> Iterator[_Feed]:
    """Inside the block, ``model(input_ids, attention_mask)`` runs layers ``layer..N-1`` on ``feed.value``.

    ``model`` is the (PEFT-injected) sequence-classification model, ``arch`` that of its unwrapped twin
    (module paths); the modules are swapped back on exit.
    """
    layers_parent, _, layers_attr = arch.layers_path.rpartition(".")
    parent = model.get_submodule(layers_parent)
    inner = getattr(model, model.base_model_prefix)
    embed_attr = embedding_module_name(arch)
    full_layers, embedding = getattr(parent, layers_attr), getattr(inner, embed_attr)
    feed = _Feed()
    setattr(inner, embed_attr, feed)
    setattr(parent, layers_attr, nn.ModuleList(list(full_layers)[layer:]))
    try:
        yield feed
    finally:
        setattr(parent, layers_attr, full_layers)
        setattr(inner, embed_attr, embedding)
