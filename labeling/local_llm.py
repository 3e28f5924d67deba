"""The local teacher: a causal LM loaded from a folder with transformers (e.g. a 70B model on on-prem GPUs,
no server). P(yes) is read from the next-token distribution after the prompt: the probability mass of the
"Yes" token variants against that of the "No" variants. Nothing leaves the process, so no masking or audit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from assay.schemas.questions import LocalLlmSource, QuestionSpec

from .prompt import render_prompt, truncate
from .votes import vote_table

ANSWER_VARIANTS = {"yes": ("Yes", " Yes", "yes", " yes", "YES"), "no": ("No", " No", "no", " no", "NO")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LocalTeacherError(RuntimeError):
    """The local model cannot be used as a yes/no teacher (missing folder, no Yes/No tokens)."""


def answer_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """The ids of the single-token spellings of Yes and No (with and without a leading space)."""
    ids: dict[str, list[int]] = {}
    unknown = tokenizer.unk_token_id
    for answer, variants in ANSWER_VARIANTS.items():
        found = []
        for variant in variants:
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] != unknown and encoded[0] not in found:
                found.append(encoded[0])
        ids[answer] = found
    if not ids["yes"] or not ids["no"] or set(ids["yes"]) & set(ids["no"]):
        raise LocalTeacherError(f"the tokenizer has no distinct single tokens for Yes and No (found {ids}); "
                                "use a model whose vocabulary spells them as one token")
    return ids


class LocalTeacher:
    """Scores P(yes) with a local causal LM; batched with left padding, sorted by length."""

    def __init__(self, spec: QuestionSpec, source: LocalLlmSource, progress: bool = True):
        path = Path(source.path).expanduser()
        if not path.is_dir():
            raise LocalTeacherError(f"source {source.name}: model folder {path} does not exist "
                                    "(fix: set path to a folder with config.json, weights and tokenizer)")
        self.spec, self.source, self.name, self.progress = spec, source, source.name, progress
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # device auto with GPUs: accelerate spreads the layers over every GPU (and CPU if they are full)
        spread = source.device == "auto" and torch.cuda.is_available()
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES.get(source.dtype, "auto"),
                                                          device_map="auto" if spread else None).eval()
        if not spread:
            self.model.to(torch.device("cpu" if source.device == "auto" else source.device))
        self.device = self.model.get_input_embeddings().weight.device
        ids = answer_token_ids(self.tokenizer)
        self.yes_ids = torch.tensor(ids["yes"], device=self.device)
        self.no_ids = torch.tensor(ids["no"], device=self.device)

    def prompt(self, text: str) -> str:
        """The same prompt as the LLM teacher, inside the tokenizer's chat template when it has one."""
        content = render_prompt(self.spec, truncate(text, self.source.max_text_chars)[0], self.source.prompt)
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        return content

    @torch.inference_mode()
    def p_yes(self, texts: list[str]) -> list[float]:
        """P(yes) for each text, from the next-token logits renormalised over the Yes and No tokens."""
        prompts = [self.prompt(text) for text in texts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        result = [0.0] * len(prompts)
        size = self.source.batch_size
        for start in tqdm(range(0, len(order), size), desc=f"{self.spec.id}/{self.name}", unit="batch",
                          disable=not self.progress):
            chunk = order[start:start + size]
            encoded = self.tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                                     add_special_tokens=not self.tokenizer.chat_template).to(self.device)
            mask = encoded["attention_mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
            logits = self.model(input_ids=encoded["input_ids"], attention_mask=mask, position_ids=positions,
                                logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            yes, no = probs[:, self.yes_ids].sum(-1), probs[:, self.no_ids].sum(-1)
            for index, value in zip(chunk, (yes / (yes + no).clamp_min(1e-12)).tolist()):
                result[index] = value
        return result

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """`id`, `vote` (1 when P(yes) >= 0.5), `conf` = max(P(yes), 1 - P(yes))."""
        if len(ids) != len(texts):
            raise ValueError(f"vote() got {len(ids)} ids but {len(texts)} texts")
        p_yes = np.array(self.p_yes(list(texts)), dtype=np.float32)
        return vote_table([str(i) for i in ids], (p_yes >= 0.5).astype(np.int8), np.maximum(p_yes, 1 - p_yes))
