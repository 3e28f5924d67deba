"""The teacher client's error classes and how an endpoint error is described (secrets redacted)."""

from __future__ import annotations

import json

import openai

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
             openai.APIConnectionError, openai.APIResponseValidationError, openai.ConflictError,
             json.JSONDecodeError)  # the last: an HTTP 200 whose body is not JSON (a broken proxy)
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


class LlmTeacherError(RuntimeError):
    """A problem no retry can fix (missing key, rejected key, unknown model, endpoint down); stops the run."""


def describe(exc: BaseException, secret: str | None = None) -> str:
    """One line naming the error and its HTTP status; `secret` (the API key) is blanked if the server echoed it."""
    status = getattr(exc, "status_code", None)
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    if secret:
        text = text.replace(secret, "[REDACTED]")
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"
