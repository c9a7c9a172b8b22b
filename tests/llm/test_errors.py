"""The error tables: every LiteLLM exception and provider status as the contract's code."""

from __future__ import annotations

import httpx
import pytest
from litellm import exceptions as provider  # noqa: TID251 (the exceptions LiteLLM raises)

from worker.errors import ErrorCode, JobError, RateLimited
from worker.llm.errors import ErrorMapper, Redactor, error_code, retry_after_s

KEY = "sk-live-0123456789abcdef"
MAPPER = ErrorMapper(Redactor([KEY, "short"]))
_REQUEST = httpx.Request("POST", "http://provider.test/v1/chat/completions")


def response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=_REQUEST)


def p(cls: type[Exception], message: str = "boom", **extra: object) -> Exception:
    return cls(message=message, llm_provider="openai", model="m", **extra)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (p(provider.AuthenticationError), ErrorCode.AUTH),
        (p(provider.PermissionDeniedError, response=response(403)), ErrorCode.AUTH),
        (p(provider.NotFoundError), ErrorCode.UNKNOWN_MODEL),
        (p(provider.ContextWindowExceededError), ErrorCode.CONTEXT_WINDOW_EXCEEDED),
        (p(provider.ContentPolicyViolationError), ErrorCode.CONTENT_FILTERED),
        (p(provider.RateLimitError), ErrorCode.RATE_LIMITED),
        (p(provider.Timeout), ErrorCode.TIMEOUT),
        (p(provider.ServiceUnavailableError), ErrorCode.PROVIDER_UNAVAILABLE),
        (p(provider.InternalServerError), ErrorCode.PROVIDER_UNAVAILABLE),
        (p(provider.APIConnectionError), ErrorCode.PROVIDER_UNAVAILABLE),
        (p(provider.BadRequestError), ErrorCode.PROVIDER_ERROR),
        (p(provider.APIError, status_code=403), ErrorCode.AUTH),
        (p(provider.APIError, status_code=404), ErrorCode.UNKNOWN_MODEL),
        (p(provider.APIError, status_code=429), ErrorCode.RATE_LIMITED),
        (p(provider.APIError, status_code=502), ErrorCode.PROVIDER_UNAVAILABLE),
        (p(provider.APIError, status_code=418), ErrorCode.PROVIDER_ERROR),
        (ValueError("unexpected"), ErrorCode.INTERNAL),
    ],
)
def test_each_exception_maps_to_its_contract_code(exc: Exception, code: ErrorCode) -> None:
    assert MAPPER.map(exc).code is code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("context_length_exceeded", ErrorCode.CONTEXT_WINDOW_EXCEEDED),
        ("content_filter", ErrorCode.CONTENT_FILTERED),
        ("content_policy_violation", ErrorCode.CONTENT_FILTERED),
    ],
)
def test_the_providers_own_error_code_decides_before_the_type(
    code: str, expected: ErrorCode
) -> None:
    exc = p(provider.BadRequestError)
    exc.code = code  # type: ignore[attr-defined]
    assert MAPPER.map(exc).code is expected


def test_transient_and_permanent_are_told_apart() -> None:
    from worker.errors import PermanentError, TransientError

    assert isinstance(MAPPER.map(p(provider.RateLimitError)), TransientError)
    assert isinstance(MAPPER.map(p(provider.AuthenticationError)), PermanentError)


def test_auth_errors_never_carry_the_providers_text() -> None:
    error = MAPPER.map(p(provider.AuthenticationError, message=f"bad key {KEY}"))
    assert KEY not in error.message
    assert "check the key" in error.message


@pytest.mark.parametrize(
    "text",
    [
        f"echoed {KEY} back",
        "key sk-abcdefgh12345678 in body",
        "AIzaSyA0123456789abcdefghijklmnop",
        "AKIAABCDEFGHIJKLMNOP",
        "Authorization: Bearer abc.def-ghi_jkl",
    ],
)
def test_secrets_are_masked_in_every_message(text: str) -> None:
    error: JobError = MAPPER.map(p(provider.BadRequestError, message=text))
    assert "[redacted]" in error.message
    for secret in (KEY, "sk-abcdefgh", "AIzaSy", "AKIAABCD", "abc.def-ghi"):
        assert secret not in error.message


def test_secrets_shorter_than_six_characters_are_not_masked_everywhere() -> None:
    assert MAPPER.redact("a short story") == "a short story"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"RETRY-AFTER": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_any_case(
    headers: dict[str, str] | None, seconds: float | None
) -> None:
    assert retry_after_s(headers) == seconds


def test_a_rate_limit_carries_the_providers_retry_after() -> None:
    exc = p(provider.RateLimitError)
    exc.litellm_response_headers = {"retry-after": "7"}  # type: ignore[attr-defined]
    mapped = MAPPER.map(exc)
    assert isinstance(mapped, RateLimited)
    assert mapped.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"error": {"code": "context_length_exceeded"}}', "context_length_exceeded"),
        ('{"error": {"message": "x"}}', None),
        ('{"error": "flat"}', None),
        ("not json", None),
    ],
)
def test_error_code_from_a_body(body: str, code: str | None) -> None:
    assert error_code(body) == code
