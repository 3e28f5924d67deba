"""Tokenise records, truncate them to a maximum length (counted), and cut token-budget batches.

Records are sorted by token length (longest first) so a batch pads little; the budget counts the
padded tokens that run through the upper layers, ``records x longest x adapters``, which bounds
activation memory whatever the input. Results are put back in input order by the caller using
each batch's ``indices``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts and how many of them were cut at ``max_length``."""

    ids: list[list[int]]
    truncated: int


@dataclass(frozen=True)
class Batch:
    """One right-padded batch: ids and mask, the records' positions in the input (when batched from a
    list), and the hidden states entering the first computed layer (when fed from a lower-layer cache)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    indices: np.ndarray | None = None
    hidden: torch.Tensor | None = None


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    """Tokenise with the model's special tokens, truncating to ``max_length`` tokens (counted).

    Texts are first encoded to ``max_length + 1`` tokens: those that reach it were truncated, and
    only they are encoded again at ``max_length`` (so the ids equal a plain truncating call). A text
    that yields no token at all (empty, with a tokenizer adding no special tokens) becomes one pad token.
    """
    ids = tokenizer(list(texts), truncation=True, max_length=max_length + 1)["input_ids"]
    long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long:
        again = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)["input_ids"]
        for i, row in zip(long, again):
            ids[i] = row
    filler = [tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0]
    return Encoded(ids=[row or filler for row in ids], truncated=len(long))


def token_batches(ids: list[list[int]], batch_tokens: int, copies: int, pad_id: int) -> Iterator[Batch]:
    """Batches of records, longest first, each with ``len * longest * copies <= batch_tokens`` (>= 1 record)."""
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, batch_tokens // max(1, longest * copies))
        chosen = order[start:start + size]
        start += len(chosen)
        yield pad([ids[i] for i in chosen], pad_id, indices=chosen)


def pad(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int, indices: np.ndarray | None = None,
        hidden: Sequence[torch.Tensor] | None = None) -> Batch:
    """Right-pad token id rows (and, if given, each row's hidden states) to the longest row."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, :len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[r, :len(row)] = 1
    states = None
    if hidden is not None:
        states = hidden[0].new_zeros((len(rows), width, hidden[0].shape[-1]))
        for r, h in enumerate(hidden):
            states[r, :len(h)] = h
    return Batch(input_ids, attention_mask, indices, states)
