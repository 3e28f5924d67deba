"""Deployment settings of the LLM teachers (`assay.yaml`): data residency, proxy, PII masking, audit, cache,
prices, budget and limits.

What belongs to the deployment rather than to one question lives here; an LLM source in a question
file may override the request limits (concurrency, rate limits, timeout, retries) for its endpoint.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assay.schemas.loader import _line_of

from .endpoints import EndpointError, parse_endpoint, parse_entry

CONFIG_ENV = "ASSAY_CONFIG"
DEFAULT_CONFIG = Path("assay.yaml")


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output: float = Field(ge=0, description="USD per 1M completion tokens.")


# Public list prices (USD / 1M tokens, standard tier). The Batch API is billed at half of these.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4-turbo": Price(input=10.00, output=30.00),
    "gpt-4": Price(input=30.00, output=60.00),
    "gpt-3.5-turbo": Price(input=0.50, output=1.50),
}


class Settings(BaseModel):
    """Deployment-wide settings for the teachers; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a proxy URL may hold a password

    residency: Literal["cloud", "on-prem"] = Field(
        default="cloud",
        description="on-prem: refuse any LLM endpoint that is not on the allow-list, before connecting.",
    )
    allowed_endpoints: list[str] = Field(
        default_factory=list,
        description="Allow-list of scheme://host[:port] endpoints, host names or CIDR ranges (exact matches, never "
                    "prefixes); when set, applies in every residency mode. Empty with on-prem: endpoints whose every "
                    "address is loopback, private (RFC 1918), link-local or IPv6 unique-local.",
    )
    proxy: str | None = Field(
        default=None,
        description="HTTP(S) proxy for the teachers, checked like an endpoint. Environment proxies (HTTPS_PROXY ...) "
                    "are never used.",
    )
    mask_pii: bool = Field(default=False, description="Mask e-mails, phone numbers and IBANs before sending text.")
    mask_patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra regular expressions to mask, by name (replaced with [NAME])."
    )
    audit: bool = Field(default=True, description="Write a JSONL audit line per request sent (never the text).")
    audit_log: Path | None = Field(default=None, description="Audit file; default <run folder>/llm/audit.jsonl.")
    cache_dir: Path | None = Field(
        default=None, description="Folder of the shared response cache; default: <run folder>/llm."
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="USD per 1M tokens by model (longest prefix match); extends the defaults."
    )
    budget_usd: float | None = Field(default=None, gt=0, description="Hard cap on LLM spend for one run folder.")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight at once, per teacher.")
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    request_timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0, description="Retries after the first attempt (429, 5xx, timeouts).")
    backoff_base_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each retry (jittered).")
    backoff_max_s: float = Field(default=60.0, gt=0)
    batch_poll_s: float = Field(default=30.0, gt=0, description="Seconds between Batch API status checks.")
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000, description="Requests per Batch API job.")

    @field_validator("allowed_endpoints")
    @classmethod
    def _entries_parse(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                parse_entry(entry)
            except EndpointError as exc:
                raise ValueError(str(exc)) from None
        return entries

    @field_validator("proxy")
    @classmethod
    def _proxy_parses(cls, proxy: str | None) -> str | None:
        if proxy is not None:
            try:
                parse_endpoint(proxy)
            except EndpointError as exc:
                raise ValueError(f"proxy: {exc}") from None
        return proxy

    @field_validator("mask_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"mask pattern name {name!r} must be a word such as customer_id")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"mask pattern {name!r} does not compile: {exc}") from None
        return patterns

    def price(self, model: str) -> Price | None:
        """The price of `model`: the longest configured (then default) name that prefixes it; None if unknown."""
        for table in (self.prices, DEFAULT_PRICES):
            matches = [name for name in table if model == name or model.startswith(name + "-")]
            if matches:
                return table[max(matches, key=len)]
        return None


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file, the line, the field and the fix."""


def _fix(error: dict) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), Settings.model_fields, n=1)
        return f"did you mean `{near[0]}`?" if near else f"valid fields: {', '.join(Settings.model_fields)}"
    if loc and loc[0] == "residency":
        return "use residency: cloud or residency: on-prem"
    if loc and loc[0] in ("allowed_endpoints", "proxy"):
        return "see 'Residency' in docs/privacy.md"
    if loc and loc[0] == "prices":
        return "write prices as `model-name: {input: USD per 1M tokens, output: USD per 1M tokens}`"
    return "see the Settings reference in docs/privacy.md"


def load_settings(path: str | Path | None = None) -> Settings:
    """Settings from `path`, else `$ASSAY_CONFIG`, else `./assay.yaml` if present, else the defaults."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        if path is None:
            return Settings()
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"{path}: settings file not found (fix: create it, or unset ${CONFIG_ENV})")
    text = path.read_text(encoding="utf-8")
    try:
        node, data = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SettingsError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)} "
                            "(fix: check indentation and quoting)") from None
    if data is None:
        return Settings()
    if not isinstance(data, dict):
        raise SettingsError(f"{path}:1: settings must be a YAML mapping (fix: start with e.g. `residency: on-prem`)")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = _line_of(node, loc)
            where = f"{path}:{line}" if line else str(path)
            field = ".".join(str(part) for part in loc) or "(file)"
            lines.append(f"{where}: {field}: {error['msg'].removeprefix('Value error, ')} (fix: {_fix(error)})")
        raise SettingsError("\n".join(lines)) from None
