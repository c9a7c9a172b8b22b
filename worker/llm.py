"""LiteLLM: the models file, resolving a job's model, streaming its answer, mapping its errors.

The only module that imports litellm. LiteLLM's Router serves the models file (LiteLLM's own
`model_list` format, `os.environ/NAME` secrets, fallbacks, cooldowns, per-deployment limits).
"""

from __future__ import annotations

import os

# Before the import: LiteLLM would otherwise fetch its price table over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import litellm
import yaml
from litellm import exceptions as provider_errors
from litellm.router import Router

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
from worker.jobs import JobRequest, Usage

litellm.suppress_debug_info = True
# LiteLLM attaches a handler of its own (every record would print twice, unformatted) and
# warns at each start about pricing fields the worker does not use; its errors still show.
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
    logging.getLogger(_name).handlers.clear()
    logging.getLogger(_name).setLevel(logging.ERROR)
LITELLM_VERSION = version("litellm")

# Key shapes a provider may echo back in an error; configured secret values are masked too.
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|[A-Za-z0-9/+]{40})"
)
_KEY_ENV_SUFFIXES = ("_API_KEY", "_SECRET_ACCESS_KEY", "_SESSION_TOKEN", "_TOKEN", "_SECRET")


class ModelsFileError(Exception):
    """The models file is missing or malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a job's request goes: a models-file name (routed) or an allowed LiteLLM string."""

    model: str
    routed: bool


@dataclass(slots=True)
class StreamResult:
    """What the provider reported about the answer, filled in while streaming."""

    model: str
    provider: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    deployment: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None


@dataclass(frozen=True)
class ModelCatalog:
    """The parsed models file."""

    model_list: list[dict[str, Any]]
    router_settings: dict[str, Any]
    litellm_settings: dict[str, Any]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(entry["model_name"] for entry in self.model_list)

    @classmethod
    def load(cls, path: Path) -> ModelCatalog:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ModelsFileError(f"cannot read models file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ModelsFileError(f"models file {path} is not valid YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ModelsFileError(f"models file {path}: expected a mapping with `model_list`")
        model_list = document.get("model_list") or []
        if not isinstance(model_list, list):
            raise ModelsFileError(f"models file {path}: `model_list` must be a list")
        for index, entry in enumerate(model_list):
            _check_entry(path, index, entry)
        return cls(
            model_list=model_list,
            router_settings=_mapping(path, document, "router_settings"),
            litellm_settings=_mapping(path, document, "litellm_settings"),
        )


def _check_entry(path: Path, index: int, entry: object) -> None:
    where = f"models file {path}: model_list[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
        raise ModelsFileError(f"{where} needs a string `model_name`")
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ModelsFileError(f"{where} needs `litellm_params.model`")


def _mapping(path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key) or {}
    if not isinstance(value, dict):
        raise ModelsFileError(f"models file {path}: `{key}` must be a mapping")
    return value


class LLMClient:
    """Resolves models and opens answer streams through LiteLLM."""

    def __init__(self, catalog: ModelCatalog, *, allow_unlisted: bool) -> None:
        self._catalog = catalog
        self._names = catalog.names
        self._allow_unlisted = allow_unlisted
        for key, value in catalog.litellm_settings.items():
            setattr(litellm, key, value)
        router_settings = {"num_retries": 0, **catalog.router_settings}
        self._router = Router(model_list=catalog.model_list, **router_settings)
        self._secrets = _configured_secrets(catalog.model_list)

    def resolve(self, request: JobRequest) -> Target:
        """A models-file name first; a LiteLLM string only where the operator allows it."""
        if request.model in self._names:
            return Target(model=request.model, routed=True)
        candidate = request.fallback_model or request.model
        if self._allow_unlisted:
            try:
                litellm.get_llm_provider(candidate)
            except Exception:  # noqa: BLE001 (LiteLLM raises several types for an unknown provider)
                raise UnknownModel(f"model '{candidate}' names no provider LiteLLM knows") from None
            return Target(model=candidate, routed=False)
        raise UnknownModel(f"model '{request.model}' is not in the models file")

    async def stream(
        self, target: Target, request: JobRequest, result: StreamResult
    ) -> AsyncIterator[str]:
        """Yield the answer's text pieces; `result` is filled in as the provider reports."""
        kwargs: dict[str, Any] = {
            **request.options,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response: Any = None
        try:
            response = await self._open(target, kwargs)
            result.provider = getattr(response, "custom_llm_provider", None)
            hidden = getattr(response, "_hidden_params", None) or {}
            result.deployment = hidden.get("litellm_model_name") or target.model
            async for chunk in response:
                _record(chunk, result)
                if chunk.choices:
                    text = chunk.choices[0].delta.content
                    if text:
                        yield text
        except JobError:
            raise
        except Exception as exc:  # noqa: BLE001 (every provider failure becomes a JobError)
            raise self.map_error(exc) from None
        finally:
            if response is not None:
                await response.aclose()
        if result.finish_reason is None:
            raise StreamBroken("the provider's stream ended without a finish reason")

    async def _open(self, target: Target, kwargs: dict[str, Any]) -> Any:
        if target.routed:
            response = await self._router.acompletion(model=target.model, **kwargs)
        else:
            response = await litellm.acompletion(model=target.model, num_retries=0, **kwargs)
        if response is None:
            # Seen with `drop_params` on a 422: LiteLLM swallowed the provider's error.
            raise ProviderError("the provider rejected the request and sent no answer")
        return response

    def map_error(self, exc: BaseException) -> JobError:
        """A LiteLLM exception as the contract's error (section 4), with secrets masked.

        The provider's error code decides first (it is the same across providers), then
        LiteLLM's exception type, then the HTTP status.
        """
        detail = self.redact(str(getattr(exc, "message", "") or exc))[:300]
        code = getattr(exc, "code", None)
        make = _BY_CODE.get(code) if isinstance(code, str) else None
        make = make or next((m for kinds, m in _ERROR_MAP if isinstance(exc, kinds)), None)
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

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _SECRET_PATTERNS.sub("[redacted]", text)

    def cost_usd(self, result: StreamResult, target: Target) -> float | None:
        """The answer's price from LiteLLM's table or the file's `model_info`; None if unknown.

        LiteLLM prices the provider's usage itself; only a counted usage is priced here.
        """
        if result.cost_usd is not None or result.usage is None:
            return result.cost_usd
        try:
            prompt, completion = litellm.cost_per_token(
                model=result.deployment or self._deployment_model(target),
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
            )
        except Exception:  # noqa: BLE001 (LiteLLM raises for models it has no price for)
            return None
        return round(float(prompt) + float(completion), 10)

    def count_tokens(self, target: Target, request: JobRequest, answer: str) -> Usage:
        model = self._deployment_model(target)
        try:
            prompt = litellm.token_counter(model=model, messages=request.messages)
            completion = litellm.token_counter(model=model, text=answer)
        except Exception:  # noqa: BLE001 (a count is an estimate; never fail a job over it)
            return Usage(prompt_tokens=0, completion_tokens=len(answer.split()))
        return Usage(prompt_tokens=int(prompt), completion_tokens=int(completion))

    def _deployment_model(self, target: Target) -> str:
        if not target.routed:
            return target.model
        for entry in self._catalog.model_list:
            if entry["model_name"] == target.model:
                return str(entry["litellm_params"]["model"])
        return target.model


def _record(chunk: Any, result: StreamResult) -> None:
    if chunk.model:
        result.model = chunk.model
    usage = getattr(chunk, "usage", None)
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        result.usage = Usage(
            prompt_tokens=int(usage.prompt_tokens or 0),
            completion_tokens=int(usage.completion_tokens or 0),
        )
        cost = getattr(usage, "cost", None)
        result.cost_usd = None if cost is None else round(float(cost), 10)
    if chunk.choices and chunk.choices[0].finish_reason:
        result.finish_reason = chunk.choices[0].finish_reason


def _configured_secrets(model_list: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    names = {
        value.removeprefix("os.environ/")
        for entry in model_list
        for value in entry["litellm_params"].values()
        if isinstance(value, str) and value.startswith("os.environ/")
    }
    names |= {name for name in os.environ if name.endswith(_KEY_ENV_SUFFIXES)}
    values = {os.environ.get(name, "") for name in names}
    literal = {
        str(value)
        for entry in model_list
        for key, value in entry["litellm_params"].items()
        if "key" in key or "secret" in key or "token" in key
    }
    # Longest first, so that a secret containing another is masked whole.
    return tuple(sorted((v for v in values | literal if len(v) >= 6), key=len, reverse=True))


def _too_long(_: object, detail: str) -> JobError:
    return ContextWindowExceeded(f"the conversation is too long for the model: {detail}")


def _filtered(_: object, detail: str) -> JobError:
    return ContentFiltered(f"the provider's content filter refused: {detail}")


# Providers' own error codes say what went wrong the same way across providers.
_BY_CODE: dict[str, Callable[[Any, str], JobError]] = {
    "context_length_exceeded": _too_long,
    "string_above_max_length": _too_long,
    "content_filter": _filtered,
    "content_policy_violation": _filtered,
    "content_filter_policy": _filtered,
}


def _auth_error(status: object) -> AuthError:
    # Never the provider's text: some echo the key they were given.
    return AuthError(
        f"the provider refused the worker's credentials ({status});"
        " the operator must check the key in the models file"
    )


# LiteLLM raises a plain APIError for some statuses (a 403 from an OpenAI-compatible server).
_BY_STATUS: dict[int, Callable[[int, str], JobError]] = {
    401: lambda status, _: _auth_error(status),
    403: lambda status, _: _auth_error(status),
    404: lambda _, d: UnknownModel(f"the provider does not know this model: {d}"),
    408: lambda _, d: ProviderTimeout(f"the provider timed out: {d}"),
    429: lambda _, d: RateLimited(f"the provider is rate limiting requests: {d}"),
}


def _retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None) or {}
    try:
        value = headers.get("retry-after")
        return None if value is None else float(value)
    except (TypeError, ValueError, AttributeError):
        return None


_ERROR_MAP: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any, str], JobError]],
    ...,
] = (
    (provider_errors.ContextWindowExceededError, _too_long),
    (provider_errors.ContentPolicyViolationError, _filtered),
    (
        (provider_errors.AuthenticationError, provider_errors.PermissionDeniedError),
        lambda e, d: _auth_error(e.status_code),
    ),
    (
        provider_errors.NotFoundError,
        lambda e, d: UnknownModel(f"the provider does not know this model: {d}"),
    ),
    (
        provider_errors.RateLimitError,
        lambda e, d: RateLimited(
            f"the provider is rate limiting requests: {d}", retry_after_s=_retry_after_s(e)
        ),
    ),
    (provider_errors.Timeout, lambda e, d: ProviderTimeout(f"the provider timed out: {d}")),
    (
        provider_errors.MidStreamFallbackError,
        lambda e, d: StreamBroken(f"the provider's stream broke off: {d}"),
    ),
    (
        (
            provider_errors.ServiceUnavailableError,
            provider_errors.InternalServerError,
            provider_errors.BadGatewayError,
            provider_errors.APIConnectionError,
        ),
        lambda e, d: ProviderUnavailable(f"the provider is unavailable: {d}"),
    ),
    (
        (provider_errors.BadRequestError, provider_errors.UnprocessableEntityError),
        lambda e, d: ProviderError(f"the provider rejected the request: {d}"),
    ),
)
