"""Local teacher mechanics on a tiny random-weight Llama causal LM with an offline WordLevel tokenizer."""

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from assay.labeling.local_llm import LocalTeacher, LocalTeacherError, answer_token_ids
from assay.labeling.votes import VOTE_SCHEMA
from assay.schemas.questions import LocalLlmSource, QuestionSpec

WORDS = ("Yes No the a is not you this comment good bad toxic nice stupid idiot thanks please article edit page "
         "question answer text guidelines examples").split()
TEXTS = ["you stupid idiot", "thanks", "this article is good and nice please edit the page",
         "the the the comment", "not toxic", "a", "idiot idiot idiot you are bad bad bad toxic toxic", "nice page"]
SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    examples=[{"text": "you idiot", "answer": True}, {"text": "thanks", "answer": False}],
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
CHAT_TEMPLATE = "{% for m in messages %}[user] {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} answer{% endif %}"


def make_causal_lm(out: Path, vocabulary=WORDS, chat_template: str | None = None, seed: int = 0) -> Path:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, **{word: i + 3 for i, word in enumerate(vocabulary)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", eos_token="[BOS]")
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=2, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_causal_lm(tmp_path_factory.mktemp("causal_lm"))


def teacher(path: Path, batch_size: int, share_prefix: bool = True, **fields) -> LocalTeacher:
    fields = {"device": "cpu", "dtype": "float32", **fields}
    source = LocalLlmSource(kind="local_llm", name="local", path=str(path), batch_size=batch_size, **fields)
    return LocalTeacher(SPEC, source, progress=False, share_prefix=share_prefix)


def test_batched_equals_unbatched_and_probabilities_are_valid(model_dir):
    one = teacher(model_dir, batch_size=1).p_yes(TEXTS)
    batched = teacher(model_dir, batch_size=4).p_yes(TEXTS)
    assert batched == pytest.approx(one, abs=1e-5)  # left padding with position ids: padding changes nothing
    assert all(0.0 <= p <= 1.0 for p in batched)
    assert len(set(round(p, 6) for p in batched)) > 1, "different texts must get different probabilities"


@pytest.mark.parametrize("chat", [False, True])
def test_shared_prefix_cache_gives_the_same_numbers(model_dir, tmp_path, chat):
    path = make_causal_lm(tmp_path / "chat", chat_template=CHAT_TEMPLATE) if chat else model_dir
    cached = teacher(path, batch_size=3)
    prefix = cached.prefix_ids()
    rows = [cached._encode(cached.prompt(text)) for text in TEXTS]
    assert len(prefix) > 20 and all(row[:len(prefix)] == prefix for row in rows), "the cached path must be taken"
    whole = teacher(path, batch_size=3, share_prefix=False)
    assert cached.p_yes(TEXTS) == pytest.approx(whole.p_yes(TEXTS), abs=1e-5)
    assert cached.p_yes(TEXTS[:1] * 2) == pytest.approx(whole.p_yes(TEXTS[:1]) * 2, abs=1e-5)


def test_vote_table_follows_the_contract(model_dir):
    local = teacher(model_dir, batch_size=3)
    table = local.vote([f"r{i}" for i in range(len(TEXTS))], TEXTS)
    assert table.schema == VOTE_SCHEMA
    p_yes = local.p_yes(TEXTS)
    assert table["vote"].to_pylist() == [int(p >= 0.5) for p in p_yes]
    assert table["conf"].to_pylist() == pytest.approx([max(p, 1 - p) for p in p_yes], abs=1e-6)
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        local.vote(["a", "b"], ["x"])


def test_yes_and_no_token_ids_are_resolved(model_dir):
    local = teacher(model_dir, batch_size=2)
    vocab = local.tokenizer.get_vocab()
    assert local.yes_ids.tolist() == [vocab["Yes"]]
    assert local.no_ids.tolist() == [vocab["No"]]


def test_chat_template_is_used_and_truncation_applies(tmp_path):
    path = make_causal_lm(tmp_path / "chat", chat_template=CHAT_TEMPLATE)
    local = teacher(path, batch_size=2, max_text_chars=5, device="auto", dtype="auto")  # GPUs when present
    prompt = local.prompt("stupid idiot")
    assert prompt.startswith("[user] ") and prompt.endswith(" answer")
    assert "<text>\nstupi\n[Note: the text was truncated to its first 5 characters.]" in prompt
    assert len(local.p_yes(["stupid idiot", "nice"])) == 2


def test_unusable_models_get_clear_errors(tmp_path):
    with pytest.raises(LocalTeacherError, match="does not exist"):
        teacher(tmp_path / "missing", batch_size=1)
    path = make_causal_lm(tmp_path / "no_answers", vocabulary=[w for w in WORDS if w not in ("Yes", "No")])
    with pytest.raises(LocalTeacherError, match="no distinct single tokens for Yes and No"):
        answer_token_ids(PreTrainedTokenizerFast.from_pretrained(str(path)))
