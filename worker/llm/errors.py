"""LiteLLM's and the providers' errors as the contract's (section 4), with secrets masked.

Pure tables and functions: what an exception, an HTTP error or an error event in a stream
means for a job. No error message leaves here without passing the redactor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import litellm
from litellm import exceptions as provider_errors
from litellm.llms.base_llm.chat.transformation import BaseLLMException
from litellm.types.router import RouterRateLimitError

from worker.errors import (
    AuthError,
    ContentFiltered,
    ContextWindowExceeded,
    InternalError,
    JobError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamBroken,
    UnknownModel,
)
from worker.llm.catalog import env_reference

# Key shapes a provider may echo back in an error; configured secret values are masked too.
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|[A-Za-z0-9/+]{40})"
)
_KEY_ENV_SUFFIXES = ("_API_KEY", "_SECRET_ACCESS_KEY", "_SESSION_TOKEN", "_TOKEN", "_SECRET")
_DETAIL_CHARS = 300


class Redactor:
    """Masks the configured secrets and anything shaped like a key."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    @classmethod
    def for_models(cls, model_list: Iterable[dict[str, Any]]) -> Redactor:
        """The secrets the models file names or holds, and every key-like variable."""
        entries = list(model_list)
        names = {
            name
            for entry in entries
            for value in entry["litellm_params"].values()
            if (name := env_reference(value)) is not None
        }
        names |= {name for name in os.environ if name.endswith(_KEY_ENV_SUFFIXES)}
        literal = {
            str(value)
            for entry in entries
            for key, value in entry["litellm_params"].items()
            if "key" in key or "secret" in key or "token" in key
        }
        return cls({os.environ.get(name, "") for name in names} | literal)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _SECRET_PATTERNS.sub("[redacted]", text)


def retry_after_s(headers: Mapping[str, Any] | None) -> float | None:
    """A `Retry-After` in seconds, from any header mapping (any case), else None."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        return None if value is None else max(float(value), 0.0)
    except (TypeError, ValueError):
        return None


def error_code(body: str) -> str | None:
    """OpenAI's `error.code` from an error body, where there is one."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


class ErrorMapper:
    """Turns whatever a provider call raised into a JobError with a user-safe message."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact

    def map(self, exc: BaseException, *, provider: str | None = None) -> JobError:
        """A LiteLLM exception as the contract's error.

        `provider` (the LiteLLM provider called) lets a provider's raw error be typed first.
        """
        if isinstance(exc, JobError):
            return exc
        if isinstance(exc, provider_errors.MidStreamFallbackError):
            return self._mid_stream(exc, provider)
        if isinstance(exc, RouterRateLimitError):
            # Every deployment of the model is in the Router's cooldown after errors: wait it
            # out, then the provider's own answer decides.
            return RateLimited(
                f"the model's deployments are cooling down after errors: {exc.model}",
                retry_after_s=float(exc.cooldown_time),
            )
        if isinstance(exc, BaseLLMException) and provider is not None:
            exc = _normalised(exc, provider)
        return self._typed(exc)

    def http(
        self, status: int, body: str, headers: Mapping[str, str], *, config: Any, provider: str
    ) -> JobError:
        """An error status answered before streaming, as the provider config types it."""
        code = error_code(body)
        make = _BY_CODE.get(code) if code is not None else None
        if make is not None:
            return make(None, self._detail(body))
        mapped = self.map(config.get_error_class(body, status, headers), provider=provider)
        if isinstance(mapped, RateLimited) and mapped.retry_after_s is None:
            mapped.retry_after_s = retry_after_s(headers)
        return mapped

    def in_stream(self, error: object) -> JobError:
        """An error event inside a stream that had begun."""
        detail = self._detail(json.dumps(error, default=str))
        return StreamBroken(f"the provider reported an error mid-stream: {detail}")

    def _detail(self, text: str) -> str:
        return self.redact(text)[:_DETAIL_CHARS]

    def _typed(self, exc: BaseException) -> JobError:
        """The provider's error code decides first (it is the same across providers), then
        LiteLLM's exception type, then the HTTP status."""
        detail = self._detail(str(getattr(exc, "message", "") or exc))
        code = getattr(exc, "code", None)
        make = _BY_CODE.get(code) if isinstance(code, str) else None
        make = make or next((m for kinds, m in _BY_TYPE if isinstance(exc, kinds)), None)
        if make is not None:
            return make(exc, detail)
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int):
            return InternalError(f"calling the provider failed: {type(exc).__name__}: {detail}")
        if status in _BY_STATUS:
            return _BY_STATUS[status](status, detail)
        if status >= 500:
            return ProviderUnavailable(f"the provider failed ({status}): {detail}")
        return ProviderError(f"the provider rejected the request ({status}): {detail}")

    def _mid_stream(
        self, exc: provider_errors.MidStreamFallbackError, provider: str | None
    ) -> JobError:
        """LiteLLM wraps whatever ended a stream; for providers that answer an error only once
        the stream is read (Gemini), the wrapped error is the provider's 429/401/... itself."""
        inner = exc.original_exception
        mapped = None if inner is None else self.map(inner, provider=provider)
        if isinstance(mapped, RateLimited) and mapped.retry_after_s is None:
            mapped.retry_after_s = _exception_retry_after_s(exc)
        if mapped is None or isinstance(mapped, ProviderUnavailable | InternalError):
            detail = self._detail(str(getattr(inner or exc, "message", "") or inner or exc))
            return StreamBroken(f"the provider's stream broke off: {detail}")
        return mapped


def provider_exception(
    status: int, body: str, headers: Mapping[str, str], *, config: Any, provider: str
) -> Exception:
    """An error status as LiteLLM's typed exception for the provider (what the Router's own
    failure bookkeeping reads: its type and status decide a cooldown)."""
    raw = config.get_error_class(body, status, headers)
    typed = _normalised(raw, provider)
    return typed if isinstance(typed, Exception) else raw


def _normalised(exc: BaseException, provider: str) -> BaseException:
    """A provider's raw error as LiteLLM's typed exception.

    Through the Router, some providers' errors (Gemini's, read with the first chunk) arrive
    raw: a bad Gemini key is then a plain 400 that only LiteLLM's mapping calls auth.
    """
    try:
        litellm.exception_type(model="", original_exception=exc, custom_llm_provider=provider)
    except Exception as mapped:  # noqa: BLE001 (exception_type raises its answer)
        return mapped
    return exc


def _exception_retry_after_s(exc: object) -> float | None:
    return retry_after_s(getattr(exc, "litellm_response_headers", None))


def _too_long(_: object, detail: str) -> JobError:
    return ContextWindowExceeded(f"the conversation is too long for the model: {detail}")


def _filtered(_: object, detail: str) -> JobError:
    return ContentFiltered(f"the provider's content filter refused: {detail}")


def _auth_error(status: object) -> AuthError:
    # Never the provider's text: some echo the key they were given.
    return AuthError(
        f"the provider refused the worker's credentials ({status});"
        " the operator must check the key in the models file"
    )


def _unknown_model(_: object, detail: str) -> JobError:
    return UnknownModel(f"the provider does not know this model: {detail}")


def _rate_limited(exc: object, detail: str) -> JobError:
    return RateLimited(
        f"the provider is rate limiting requests: {detail}",
        retry_after_s=_exception_retry_after_s(exc),
    )


def _unavailable(_: object, detail: str) -> JobError:
    return ProviderUnavailable(f"the provider is unavailable: {detail}")


def _rejected(_: object, detail: str) -> JobError:
    return ProviderError(f"the provider rejected the request: {detail}")


# Providers' own error codes say what went wrong the same way across providers.
_BY_CODE: dict[str, Callable[[Any, str], JobError]] = {
    "context_length_exceeded": _too_long,
    "string_above_max_length": _too_long,
    "content_filter": _filtered,
    "content_policy_violation": _filtered,
    "content_filter_policy": _filtered,
}

# LiteLLM raises a plain APIError for some statuses (a 403 from an OpenAI-compatible server).
_BY_STATUS: dict[int, Callable[[int, str], JobError]] = {
    401: lambda status, _: _auth_error(status),
    403: lambda status, _: _auth_error(status),
    404: _unknown_model,
    408: lambda _, d: ProviderTimeout(f"the provider timed out: {d}"),
    429: lambda _, d: RateLimited(f"the provider is rate limiting requests: {d}"),
}

_BY_TYPE: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any, str], JobError]],
    ...,
] = (
    (provider_errors.ContextWindowExceededError, _too_long),
    (provider_errors.ContentPolicyViolationError, _filtered),
    (
        (provider_errors.AuthenticationError, provider_errors.PermissionDeniedError),
        lambda e, _: _auth_error(e.status_code),
    ),
    (provider_errors.NotFoundError, _unknown_model),
    (provider_errors.RateLimitError, _rate_limited),
    (provider_errors.Timeout, lambda _, d: ProviderTimeout(f"the provider timed out: {d}")),
    (
        provider_errors.MidStreamFallbackError,
        lambda _, d: StreamBroken(f"the provider's stream broke off: {d}"),
    ),
    (
        (
            provider_errors.ServiceUnavailableError,
            provider_errors.InternalServerError,
            provider_errors.BadGatewayError,
            provider_errors.APIConnectionError,
        ),
        _unavailable,
    ),
    ((provider_errors.BadRequestError, provider_errors.UnprocessableEntityError), _rejected),
)
