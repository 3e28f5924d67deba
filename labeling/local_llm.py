"""The local teacher: a causal LM loaded from a folder with transformers (e.g. a 70B model on on-prem GPUs,
no server). P(yes) is read from the next-token distribution after the prompt: the probability mass of the
"Yes" token variants against that of the "No" variants. Nothing leaves the process, so no masking or audit.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from assay.schemas.questions import LocalLlmSource, QuestionSpec

from .teacher.prompt import render_prompt, truncate
from .votes import vote_table

ANSWER_VARIANTS = {"yes": ("Yes", " Yes", "yes", " yes", "YES"), "no": ("No", " No", "no", " no", "NO")}
TEXT_MARK = "\x00record text\x00"
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
    """Scores P(yes) with a local causal LM; batched with left padding, sorted by length.

    The prompt up to the record's text (instructions, guidelines, examples: most of its tokens) is the
    same for every record of a question: with ``share_prefix`` it runs once and its key/value cache is
    reused by every batch, so each record costs only its own tokens.
    """

    def __init__(self, spec: QuestionSpec, source: LocalLlmSource, progress: bool = True, share_prefix: bool = True):
        path = Path(source.path).expanduser()
        if not path.is_dir():
            raise LocalTeacherError(f"source {source.name}: model folder {path} does not exist "
                                    "(fix: set path to a folder with config.json, weights and tokenizer)")
        self.spec, self.source, self.name, self.progress = spec, source, source.name, progress
        self.share_prefix = share_prefix
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
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
        # transformers 5 renames forward's past_key_values to cache; 4.x knows only the old name
        self._cache_argument = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"

    def prompt(self, text: str) -> str:
        """The same prompt as the LLM teacher, inside the tokenizer's chat template when it has one."""
        return self._wrap(render_prompt(self.spec, truncate(text, self.source.max_text_chars)[0], self.source.prompt))

    def _wrap(self, content: str) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        return content

    def _encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=not self.tokenizer.chat_template)["input_ids"]

    def prefix_ids(self) -> list[int]:
        """Token ids of the prompt before the record's text (empty when the template has no ``{text}``)."""
        prompt = self._wrap(render_prompt(self.spec, TEXT_MARK, self.source.prompt))
        return self._encode(prompt[:prompt.index(TEXT_MARK)]) if TEXT_MARK in prompt else []

    @torch.inference_mode()
    def p_yes(self, texts: list[str]) -> list[float]:
        """P(yes) for each text, from the next-token logits renormalised over the Yes and No tokens.

        Records whose tokens start with the shared prefix's run on its cache; the others (a tokenizer
        that merges across the boundary) run whole. Both give the same numbers.
        """
        rows = [self._encode(self.prompt(text)) for text in texts]
        prefix = self.prefix_ids() if self.share_prefix else []
        n = len(prefix)
        shared = [bool(n) and len(row) > n and row[:n] == prefix for row in rows]
        cache = self._prefix_cache(prefix) if any(shared) else None
        result = [0.0] * len(rows)
        size = self.source.batch_size
        groups = [[i for i in range(len(rows)) if shared[i] == flag] for flag in (True, False)]
        chunks = [(sorted_chunk, flag) for flag, group in zip((True, False), groups)
                  for sorted_chunk in _chunks(sorted(group, key=lambda i: len(rows[i])), size)]
        for chunk, flag in tqdm(chunks, desc=f"{self.spec.id}/{self.name}", unit="batch", disable=not self.progress):
            values = self._score([rows[i] for i in chunk], cache if flag else None, n if flag else 0)
            for index, value in zip(chunk, values):
                result[index] = value
        return result

    def _prefix_cache(self, prefix: list[int]):
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        return out["cache"] if "cache" in out else out["past_key_values"]  # transformers 5 renames it

    def _score(self, rows: list[list[int]], cache, n: int) -> list[float]:
        """P(yes) of a batch: tokens after the first ``n`` (those are in ``cache``), left-padded."""
        width = max(len(row) - n for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n + width), dtype=torch.long)
        mask[:, :n] = 1
        for k, row in enumerate(rows):
            own = row[n:]
            input_ids[k, width - len(own):] = torch.tensor(own)
            mask[k, n + width - len(own):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n:]  # padding must not shift positions
        kwargs = {}
        if cache is not None:
            copied = copy.deepcopy(cache)
            copied.batch_repeat_interleave(len(rows))
            kwargs[self._cache_argument] = copied
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), logits_to_keep=1, use_cache=cache is not None,
                            **kwargs).logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        yes, no = probs[:, self.yes_ids].sum(-1), probs[:, self.no_ids].sum(-1)
        return (yes / (yes + no).clamp_min(1e-12)).tolist()

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """`id`, `vote` (1 when P(yes) >= 0.5), `conf` = max(P(yes), 1 - P(yes))."""
        if len(ids) != len(texts):
            raise ValueError(f"vote() got {len(ids)} ids but {len(texts)} texts")
        p_yes = np.array(self.p_yes(list(texts)), dtype=np.float32)
        return vote_table([str(i) for i in ids], (p_yes >= 0.5).astype(np.int8), np.maximum(p_yes, 1 - p_yes))


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]
