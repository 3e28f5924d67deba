"""The yes/no prompt built from a question spec, and reading Yes/No (or P(yes)) back from an answer."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from assay.schemas.questions import QuestionSpec

DEFAULT_TEMPLATE = """\
Answer the question about the text below with exactly one word: Yes or No.

Question: {question}

Guidelines:
{guidelines}

Examples:
{examples}

<text>
{text}
</text>

Question: {question}
Answer (Yes or No):"""

TRUNCATION_NOTE = "\n[Note: the text was truncated to its first {chars} characters.]"


def render_examples(spec: QuestionSpec) -> str:
    if not spec.examples:
        return "(none)"
    return "\n".join(f"- Text: {ex.text!r} -> {'Yes' if ex.answer else 'No'}" for ex in spec.examples)


def render_prompt(spec: QuestionSpec, text: str, template: str | None = None) -> str:
    """Fill the template's {question} {guidelines} {examples} {text} (other braces are left as they are)."""
    values = {
        "question": spec.question.strip(),
        "guidelines": spec.guidelines.strip() or "(none)",
        "examples": render_examples(spec),
        "text": text,
    }
    return re.sub(r"\{(question|guidelines|examples|text)\}", lambda m: values[m[1]], template or DEFAULT_TEMPLATE)


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    """The text cut to `max_chars` with a note appended when it was longer; and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars] + TRUNCATION_NOTE.format(chars=max_chars), True


def normalise_token(token: str) -> str | None:
    """'yes' or 'no' for tokens such as ' Yes', 'YES', 'no.', '**No'; None for anything else."""
    word = re.sub(r"[^a-z]", "", token.lower())
    return word if word in ("yes", "no") else None


_ANSWER = re.compile(r"^\W*(?:answer\W*)?(yes|no)\b", re.IGNORECASE)


def parse_answer(content: str | None) -> int | None:
    """1 for Yes, 0 for No, None when the answer does not start with Yes or No."""
    match = _ANSWER.match(content or "")
    return None if match is None else int(match[1].lower() == "yes")


def p_yes_from_top_logprobs(positions: Iterable[tuple[str, Iterable[tuple[str, float]]]]) -> float | None:
    """P(yes) at the first answer position whose sampled token is Yes/No-like.

    `positions` are (sampled token, [(candidate token, logprob), ...]) in answer order; leading tokens such
    as whitespace or markdown are skipped. The probability mass of candidates normalising to yes and to no
    is summed and renormalised; None when no position carries any yes/no mass.
    """
    for token, candidates in positions:
        if normalise_token(token) is None:
            continue
        mass = {"yes": 0.0, "no": 0.0}
        for candidate, logprob in candidates:
            word = normalise_token(candidate)
            if word is not None:
                mass[word] += math.exp(logprob)
        total = mass["yes"] + mass["no"]
        return mass["yes"] / total if total > 0 else None
    return None


def read_completion(completion: dict) -> dict:
    """The cache record of a chat completion (a dict in the OpenAI format): answer text, P(yes), usage."""
    choice = (completion.get("choices") or [{}])[0]
    content = ((choice.get("message") or {}).get("content") or "").strip()
    positions = [(item.get("token", ""),
                  [(top["token"], top["logprob"]) for top in item.get("top_logprobs") or []]
                  or [(item.get("token", ""), item.get("logprob", 0.0))])
                 for item in ((choice.get("logprobs") or {}).get("content") or [])]
    usage = completion.get("usage") or {}
    return {"content": content[:200], "p_yes": p_yes_from_top_logprobs(positions),
            "tokens_in": int(usage.get("prompt_tokens") or 0), "tokens_out": int(usage.get("completion_tokens") or 0)}


def decide(answer: dict) -> tuple[int, float | None]:
    """(vote, conf) of a cache record: from P(yes) when known, else the parsed Yes/No; (-1, None) if neither."""
    p_yes = answer.get("p_yes")
    if p_yes is not None:
        return int(p_yes >= 0.5), max(p_yes, 1.0 - p_yes)
    hard = parse_answer(answer.get("content"))
    return (-1, None) if hard is None else (hard, None)
