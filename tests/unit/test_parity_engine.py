"""Parity: the engine's P(yes) equals PEFT's, one adapter at a time, within 1e-5 in fp32.

The silent-failure guard: adapters of different ranks, depths (all layers / top layers only / one
layer / the pooler), target modules and scalings (``alpha_pattern``, rsLoRA) share one batch; every
LoRA B and head is random and non-zero, and a control checks that zeroing an adapter's LoRA weights
moves P(yes) well beyond the tolerance, so "accepted but not applied" cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import (  # noqa: F401  (one_torch_thread: autouse)
    make_adapter,
    make_llama_base,
    minilm,
    one_torch_thread,
    peft_probabilities,
    zeroed_lora_copy,
)

from assay.engine.scorer import Scorer

TOL = 1e-5
TEXTS = [
    "Thanks for the edit, the article reads much better now.",
    "You are a stupid idiot and everybody on this talk page hates you. " * 12,  # truncated at 48 tokens
    "ok",
    "",
    "Please stop vandalising the page about the 1998 election; it has been reverted three times.",
    "I will find you and hurt you",
    "What a lovely, helpful comment — cheers!",
    "the the the the the the the the the the the the the the",
]
MINILM_ADAPTERS = {  # question id -> (rank, target modules, layers_to_transform)
    "all_qv_r4": (4, ["query", "value"], None),
    "top2_all_r8": (8, ["query", "key", "value", "dense"], [4, 5]),
    "dense_r16_with_pooler": (16, ["dense"], None),  # also adapts bert.pooler.dense
    "top1_value_r2": (2, ["value"], [5]),
}


@pytest.fixture(scope="module")
def minilm_adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("minilm_adapters")
    return {qid: make_adapter(minilm(), root / qid, seed, rank, targets, layers)
            for seed, (qid, (rank, targets, layers)) in enumerate(MINILM_ADAPTERS.items())}


@pytest.mark.parametrize("share_lower", [True, False])
def test_minilm_engine_equals_peft(minilm_adapters, share_lower):
    scorer = Scorer(minilm(), max_length=48, batch_tokens=600, share_lower=share_lower)
    for qid, path in minilm_adapters.items():
        scorer.add_adapter(qid, path)
    got = scorer.score_texts(TEXTS)
    assert scorer.truncated == 1
    enc = scorer.tokenizer(TEXTS, truncation=True, max_length=48, padding=True, return_tensors="pt")
    for qid, path in minilm_adapters.items():
        ref = peft_probabilities(minilm(), path, enc["input_ids"], enc["attention_mask"]).numpy()
        assert np.abs(got[qid] - ref).max() < TOL, qid


def test_lora_weights_matter(minilm_adapters, tmp_path):
    """Control: zeroing one adapter's LoRA weights changes P(yes) by far more than the tolerance."""
    qid = "top1_value_r2"
    scorer = Scorer(minilm(), max_length=48)
    scorer.add_adapter(qid, minilm_adapters[qid])
    scorer.add_adapter("zeroed", zeroed_lora_copy(minilm_adapters[qid], tmp_path / "zeroed"))
    got = scorer.score_texts(TEXTS)
    assert np.abs(got[qid] - got["zeroed"]).max() > 100 * TOL


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("llama")
    base = make_llama_base(root / "base", layers=4)
    every_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    specs = {"all_qv_r4": (4, ["q_proj", "v_proj"], None, {}),
             "top_half_all_r8": (8, every_linear, [2, 3], {"alpha_pattern": {"o_proj": 3, "layers.3.up_proj": 40}}),
             "top1_mlp_r16_rslora": (16, ["gate_proj", "down_proj"], [3], {"use_rslora": True})}
    adapters = {qid: make_adapter(base, root / qid, 10 + seed, rank, targets, layers, head="score", **options)
                for seed, (qid, (rank, targets, layers, options)) in enumerate(specs.items())}
    return base, adapters


@pytest.mark.parametrize("share_lower", [True, False])
def test_llama_engine_equals_peft_on_token_ids(llama, share_lower):
    base, adapters = llama
    scorer = Scorer(base, share_lower=share_lower)
    for qid, path in adapters.items():
        scorer.add_adapter(qid, path)
    generator = torch.Generator().manual_seed(0)
    lengths = [12, 3, 30, 7, 1]
    input_ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)  # pad id 0, right padding
    for row, n in enumerate(lengths):
        input_ids[row, :n] = torch.randint(3, 29, (n,), generator=generator)
    mask = (input_ids != 0).long()
    got = scorer.model.probabilities(input_ids, mask).numpy()
    for k, (qid, path) in enumerate(adapters.items()):
        ref = peft_probabilities(base, path, input_ids, mask).numpy()
        assert np.abs(got[:, k] - ref).max() < TOL, qid


def test_llama_text_path_equals_peft(llama):
    base, adapters = llama
    scorer = Scorer(base, batch_tokens=64)
    for qid, path in adapters.items():
        scorer.add_adapter(qid, path)
    texts = ["you stupid idiot", "thanks for the good edit please", "hate " * 80, "the"]
    got = scorer.score_texts(texts)
    assert scorer.truncated == 1 and scorer.max_length == 64
    enc = scorer.tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    for qid, path in adapters.items():
        ref = peft_probabilities(base, path, enc["input_ids"], enc["attention_mask"]).numpy()
        assert np.abs(got[qid] - ref).max() < TOL, qid
