"""Question specs: one YAML file per yes/no question, modelled with pydantic v2."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Example(_Strict):
    """A text with its yes/no answer, shown to teachers and used by the embedding source."""

    text: str = Field(min_length=1)
    answer: bool


PROMPT_PLACEHOLDERS = ("question", "guidelines", "examples", "text")


def _check_template(template: str | None) -> str | None:
    """A prompt template must hold {text} and no placeholder other than the four known ones."""
    if template is None:
        return None
    unknown = sorted(set(re.findall(r"\{(\w+)\}", template)) - set(PROMPT_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                         f"use {', '.join('{' + p + '}' for p in PROMPT_PLACEHOLDERS)}")
    if "{text}" not in template:
        raise ValueError("a prompt template must contain the {text} placeholder")
    return template


class _Source(_Strict):
    name: str | None = Field(
        default=None, description="Column name of this source's votes; defaults to the kind (made unique)."
    )
    weight: float = Field(default=1.0, gt=0, description="Prior weight of this source in weighted majority vote.")


class _Teacher(_Source):
    """A source that is asked the question in a prompt (LLM endpoint or local causal LM)."""

    prompt: str | None = Field(
        default=None, description="Prompt template override; placeholders {question} {guidelines} {examples} {text}."
    )
    max_text_chars: int = Field(default=4000, gt=0, description="Longer texts are truncated, with a note.")

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)


# A value that is more likely a pasted key than the name of a variable: 20+ letters and digits, with a digit and
# no underscore (hex Azure keys, base64 keys); names such as OPENAI_API_KEY or AZURE_KEY_2 pass.
_KEY_SHAPED = re.compile(r"(?=.*\d)[A-Za-z0-9]{20,}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def looks_like_key(name: str) -> bool:
    """Is `name` (meant to be an environment variable's NAME) shaped like an API key instead?"""
    return not _VARIABLE.fullmatch(name) or bool(_KEY_SHAPED.fullmatch(name))


class LlmSource(_Teacher):
    """An OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, TGI, LoRAX).

    The request limits left unset here come from the deployment settings (`assay.yaml`).
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a pasted key is never echoed

    kind: Literal["llm"]
    base_url: str = Field(description="e.g. https://api.openai.com/v1 or http://vllm.internal:8000/v1")
    model: str
    api_key_env: str = Field(description="Name of the environment variable holding the API key (never the key).")
    api_key_file: str | None = Field(
        default=None, description="File holding the API key (e.g. a mounted secret); used instead of api_key_env."
    )
    skip_when_confident: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description="Skip records the other sources already decide with at least this confidence.",
    )
    mode: Literal["online", "batch"] = Field(
        default="online", description="online: chat requests now; batch: the OpenAI Batch API (half price, <24 h)."
    )
    logprobs: bool = Field(default=True, description="Ask for top log-probabilities to get a calibrated P(yes).")
    top_logprobs: int = Field(default=10, ge=1, le=20)
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_answer_tokens: int = Field(default=4, ge=1, le=64, description="Completion tokens allowed for the answer.")
    concurrency: int | None = Field(default=None, ge=1, le=1024, description="Override of the settings' concurrency.")
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    request_timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if looks_like_key(value):
            raise ValueError("looks like an API key, not the NAME of an environment variable (value not shown; "
                             "fix: export the key as e.g. OPENAI_API_KEY and write api_key_env: OPENAI_API_KEY)")
        return value


class LocalLlmSource(_Teacher):
    """A causal LM loaded from a local path with transformers; P(yes) from next-token logits."""

    kind: Literal["local_llm"]
    path: str = Field(description="Folder of a transformers causal LM (weights and tokenizer).")
    batch_size: int = Field(default=8, gt=0)
    device: str = Field(default="auto", description="auto (GPUs when present, else CPU), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class RulesSource(_Source):
    """Keywords and regular expressions written by the data team."""

    kind: Literal["rules"]
    yes_keywords: list[str] = Field(default_factory=list)
    no_keywords: list[str] = Field(default_factory=list)
    yes_patterns: list[str] = Field(default_factory=list, description="Regular expressions voting yes.")
    no_patterns: list[str] = Field(default_factory=list, description="Regular expressions voting no.")
    case_sensitive: bool = False
    word_boundary: bool = True

    @field_validator("yes_patterns", "no_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regular expression {pattern!r} does not compile: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _not_empty(self) -> RulesSource:
        if not (self.yes_keywords or self.no_keywords or self.yes_patterns or self.no_patterns):
            raise ValueError("a rules source needs at least one keyword or pattern")
        return self


class EmbeddingSource(_Source):
    """Cosine similarity of the text to the spec's yes and no examples."""

    kind: Literal["embedding"]
    model: str | None = Field(default=None, description="Local sentence-transformers path; default: bundled MiniLM.")
    abstain_band: float = Field(
        default=0.02, ge=0, lt=1, description="Abstain when |sim(yes) - sim(no)| is below this margin."
    )


class LabelsFileSource(_Source):
    """Answers recorded elsewhere: a Parquet or CSV file with an id and a 0/1 column."""

    kind: Literal["labels_file"]
    path: str = Field(description="Relative paths resolve against the question file's folder.")
    id_column: str = "id"
    label_column: str = "label"
    vote: Literal["both", "yes", "no"] = Field(
        default="both",
        description="Which recorded answers count as votes: both, only yes (no abstains), or only no (yes abstains).",
    )


Source = Annotated[
    LlmSource | LocalLlmSource | RulesSource | EmbeddingSource | LabelsFileSource,
    Field(discriminator="kind"),
]
SOURCE_KINDS = ("llm", "local_llm", "rules", "embedding", "labels_file")


class Training(_Strict):
    """Overrides of the distillation defaults for this question."""

    base_model: str | None = Field(default=None, description="Hugging Face model path; default: bundled MiniLM.")
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: float | None = Field(default=None, gt=0, description="Default: 2 x rank.")
    target_modules: list[str] | None = Field(default=None, description="Default: the base model's attention/MLP linears.")
    top_layers: int | None = Field(
        default=None, ge=1, description="Adapt only the top N transformer layers (shared lower layers); None: default."
    )
    epochs: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)


class Promotion(_Strict):
    """When a newly trained adapter may become current (distill/evaluate.py applies these, in this order)."""

    max_yes_rate: float = Field(default=0.9, gt=0, le=1, description=(
        "Refuse labels that say yes to more than this share of the seed (degenerate labels). Labels within a factor "
        "of 1.5 of a stated expected_yes_rate pass; labels all one answer never do."))
    min_yes_rate: float = Field(default=0.005, ge=0, lt=1, description=(
        "Refuse labels that say yes to less than this share of the seed (degenerate labels). Labels within a factor "
        "of 1.5 of a stated expected_yes_rate pass; labels all one answer never do."))
    min_holdout_positives: int = Field(default=30, ge=1, description=(
        "Yes records (hard labels) the hold-out needs; below 30 the 95 % interval of the held-out F1 is "
        "wider than 0.27, too wide to tell an adapter from a baseline."))
    beat_baseline: bool = Field(default=True, description=(
        "Promote only when the adapter's held-out F1 beats TF-IDF + logistic regression trained on the "
        "same labels and decided by the same threshold rule."))
    min_f1: float | None = Field(default=None, ge=0, le=1, description=(
        "An absolute floor on the evaluation F1 on top of the baseline comparison (none by default)."))
    min_precision: float = Field(default=0.0, ge=0, le=1)
    require_known_balance: bool = Field(default=True, description=(
        "Refuse labels whose class balance is a guess (the label model collapsed or could not be identified, "
        "and no expected_yes_rate or gold was given): their yes rate says nothing about the question."))
    require_labels_near_balance: bool = Field(default=True, description=(
        "Refuse labels whose yes rate one tie group moved far from the class balance (most often the records "
        "no source voted on, labelled alike), or whose mean P(yes), what the student learns, lies far from it: "
        "they follow the tie rule or an uncalibrated vote, not the question."))


class QuestionSpec(_Strict):
    """One yes/no question, its weak labellers and its training and promotion settings."""

    id: str = Field(description="snake_case, unique across the folder; names the output columns.")
    version: int = Field(ge=1)
    question: str = Field(min_length=3, description="The yes/no question as it would be put to a person.")
    guidelines: str = Field(default="", description="What counts as yes and no, edge cases.")
    examples: list[Example] = Field(default_factory=list)
    expected_yes_rate: float | None = Field(default=None, gt=0, lt=1, description=(
        "The share of records you expect to be yes, when you know it (from a sample you read): the label "
        "model holds its class balance there instead of estimating it. Set it for rare questions and when "
        "the label report says the balance could not be estimated."))
    sources: list[Source] = Field(min_length=1)
    training: Training = Field(default_factory=Training)
    promotion: Promotion = Field(default_factory=Promotion)

    @field_validator("id")
    @classmethod
    def _snake_case(cls, value: str) -> str:
        if not SNAKE_CASE.fullmatch(value):
            raise ValueError(f"{value!r} is not snake_case (lowercase letters, digits and _, starting with a letter)")
        return value

    @model_validator(mode="after")
    def _name_sources(self) -> QuestionSpec:
        seen: dict[str, int] = {}
        for source in self.sources:
            base = source.name or source.kind
            seen[base] = seen.get(base, 0) + 1
            if source.name is None:
                source.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique within a question; repeated: {', '.join(duplicates)}")
        return self


def json_schema() -> dict:
    """The JSON Schema of a question file, for editors (yaml-language-server)."""
    schema = QuestionSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Assay question"
    return schema
