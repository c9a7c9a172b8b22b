"""Why a job failed: the exception tree and its contract `error_code`s (contract section 4).

JobError                        carries a user-safe message and an ErrorCode
├── PermanentError              never retried: the job fails at once
│   ├── InvalidRequest          invalid_request
│   ├── UnknownModel            unknown_model
│   ├── AuthError               auth
│   ├── ContextWindowExceeded   context_window_exceeded
│   ├── ContentFiltered         content_filtered
│   ├── ProviderError           provider_error (any other provider 4xx)
│   └── InternalError           internal
└── TransientError              retried with backoff, then the job fails with its code
    ├── RateLimited             rate_limited (carries the provider's Retry-After)
    ├── ProviderTimeout         timeout
    ├── ProviderUnavailable     provider_unavailable (5xx, connection errors)
    └── StreamBroken            provider_unavailable (dropped or unfinished stream)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_MODEL = "unknown_model"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
    CONTENT_FILTERED = "content_filtered"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_ERROR = "provider_error"
    INTERNAL = "internal"


class JobError(Exception):
    """A failure with a message fit for the job row: no stack trace, no secret."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(JobError):
    pass


class TransientError(JobError):
    pass


class InvalidRequest(PermanentError):
    code = ErrorCode.INVALID_REQUEST


class UnknownModel(PermanentError):
    code = ErrorCode.UNKNOWN_MODEL


class AuthError(PermanentError):
    code = ErrorCode.AUTH


class ContextWindowExceeded(PermanentError):
    code = ErrorCode.CONTEXT_WINDOW_EXCEEDED


class ContentFiltered(PermanentError):
    code = ErrorCode.CONTENT_FILTERED


class ProviderError(PermanentError):
    code = ErrorCode.PROVIDER_ERROR


class InternalError(PermanentError):
    code = ErrorCode.INTERNAL


class RateLimited(TransientError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProviderTimeout(TransientError):
    code = ErrorCode.TIMEOUT


class ProviderUnavailable(TransientError):
    code = ErrorCode.PROVIDER_UNAVAILABLE


class StreamBroken(TransientError):
    code = ErrorCode.PROVIDER_UNAVAILABLE
