"""LiteLLM: the models file, resolving a job's model, streaming its answer, mapping its errors.

The only module that imports litellm. LiteLLM's Router serves the models file (LiteLLM's own
`model_list` format, `os.environ/NAME` secrets, fallbacks, cooldowns, per-deployment limits).
"""

from __future__ import annotations

import os

# Before the import: LiteLLM would otherwise fetch its price table over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import structlog
import yaml
from litellm import exceptions as provider_errors
from litellm.llms.base_llm.chat.transformation import BaseLLMException
from litellm.router import Router
from litellm.types.router import RouterRateLimitError
from litellm.types.utils import LlmProviders
from litellm.utils import (
    ProviderConfigManager,
    calculate_max_parallel_requests,
    get_optional_params,
)

from worker import sse
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
log = structlog.get_logger(__name__)

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
    # The LiteLLM model string and models-file entry id of the deployment that answered.
    deployment: str | None = None
    model_id: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None


@dataclass(frozen=True)
class ModelCatalog:
    """The parsed, validated models file."""

    model_list: list[dict[str, Any]]
    router_settings: dict[str, Any]
    litellm_settings: dict[str, Any]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(entry["model_name"] for entry in self.model_list)

    def unset_variables(self) -> list[tuple[str, str, str]]:
        """(model_name, setting, variable) for each `os.environ/NAME` that is not set.

        A warning, not an error: one example file serves several deployments, and a model
        whose key is missing fails its jobs with `auth` without stopping the others.
        """
        return [
            (entry["model_name"], key, value.removeprefix("os.environ/"))
            for entry in self.model_list
            for key, value in entry["litellm_params"].items()
            if isinstance(value, str)
            and value.startswith("os.environ/")
            and not os.environ.get(value.removeprefix("os.environ/"))
        ]

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
        catalog = cls(
            model_list=[_with_id(index, entry) for index, entry in enumerate(model_list)],
            router_settings=_mapping(path, document, "router_settings"),
            litellm_settings=_mapping(path, document, "litellm_settings"),
        )
        _check_fallbacks(path, catalog)
        return catalog

    def entry(self, model_id: str | None) -> dict[str, Any] | None:
        return next((e for e in self.model_list if e["model_info"]["id"] == model_id), None)

    def parallel_limit(self, model_name: str) -> int | None:
        """How many streams a model name may run at once: the sum of its deployments' limits,
        computed as LiteLLM's Router computes them; None when one of them has no limit."""
        default = self.router_settings.get("default_max_parallel_requests")
        total = 0
        for entry in self.model_list:
            if entry["model_name"] != model_name:
                continue
            params = entry["litellm_params"]
            limit = calculate_max_parallel_requests(
                max_parallel_requests=params.get("max_parallel_requests"),
                rpm=params.get("rpm"),
                tpm=params.get("tpm"),
                default_max_parallel_requests=default,
            )
            if not limit:
                return None
            total += int(limit)
        return total or None


_LIMIT_KEYS = ("max_parallel_requests", "rpm", "tpm")
_PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token")
_FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


def _check_entry(path: Path, index: int, entry: object) -> None:
    where = f"models file {path}: model_list[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
        raise ModelsFileError(f"{where} needs a string `model_name`")
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ModelsFileError(f"{where} needs `litellm_params.model`")
    where = f"{where} ({entry['model_name']})"
    try:
        litellm.get_llm_provider(
            params["model"], custom_llm_provider=params.get("custom_llm_provider")
        )
    except Exception:  # noqa: BLE001 (LiteLLM raises several types for an unknown provider)
        raise ModelsFileError(
            f"{where}: LiteLLM knows no provider for model '{params['model']}'"
            " (prefix it, e.g. openai/, gemini/, bedrock/, azure/)"
        ) from None
    for key in _LIMIT_KEYS:
        value = params.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ModelsFileError(f"{where}: litellm_params.{key} must be a positive integer")
    info = entry.get("model_info", {})
    if not isinstance(info, dict):
        raise ModelsFileError(f"{where}: `model_info` must be a mapping")
    for key in _PRICE_KEYS:
        value = info.get(key)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ModelsFileError(f"{where}: model_info.{key} must be a number >= 0")


def _with_id(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with a `model_info.id`: LiteLLM tags each chunk with it, so the worker knows
    which deployment answered (after a fallback too)."""
    info = dict(entry.get("model_info") or {})
    info.setdefault("id", f"{entry['model_name']}#{index}")
    return {**entry, "model_info": info}


def _check_fallbacks(path: Path, catalog: ModelCatalog) -> None:
    names = catalog.names
    for key in _FALLBACK_KEYS:
        rules = catalog.router_settings.get(key)
        if rules is None:
            continue
        where = f"models file {path}: router_settings.{key}"
        if not isinstance(rules, list):
            raise ModelsFileError(f"{where} must be a list like [{{primary: [fallback, ...]}}]")
        for rule in rules:
            if not isinstance(rule, dict) or len(rule) != 1:
                raise ModelsFileError(f"{where}: each item must map one model_name to a list")
            ((primary, targets),) = rule.items()
            if not isinstance(targets, list):
                raise ModelsFileError(f"{where}: '{primary}' must map to a list of model names")
            unknown = [name for name in (primary, *targets) if name not in names]
            if unknown:
                raise ModelsFileError(f"{where} names models not in model_list: {unknown}")


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
        # Before the Router exists: it registers every deployment in LiteLLM's price table,
        # with a price of 0 where it knows none.
        self._priced = {
            model: _in_price_table(model)
            for model in {str(e["litellm_params"]["model"]) for e in catalog.model_list}
        }
        # The worker retries itself (backoff, Retry-After). The Router's cooldown would take a
        # model's only deployment out for seconds after one 429 and fail every job waiting on
        # it; operators with several deployments per model can turn it on in router_settings.
        router_settings = {"num_retries": 0, "disable_cooldowns": True, **catalog.router_settings}
        try:
            self._router = Router(model_list=catalog.model_list, **router_settings)
        except Exception as exc:  # noqa: BLE001 (LiteLLM rejects bad settings with any type)
            raise ModelsFileError(f"LiteLLM's Router rejected the models file: {exc}") from None
        for model_name, setting, variable in catalog.unset_variables():
            log.warning("model_setting_unset", model=model_name, setting=setting, variable=variable)
        self._secrets = _configured_secrets(catalog.model_list)
        self._direct = _direct_routes(catalog)
        self._session: aiohttp.ClientSession | None = None
        self._limits: dict[str, asyncio.Semaphore] = {}
        for name in catalog.names:
            limit = catalog.parallel_limit(name)
            if limit is not None:
                self._limits[name] = asyncio.Semaphore(limit)

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

    @contextlib.asynccontextmanager
    async def permit(self, target: Target) -> AsyncIterator[None]:
        """Hold one of the model's parallel-stream slots for a whole attempt; wait for one.

        LiteLLM's Router answers a request beyond a deployment's `max_parallel_requests`
        (or the limit it derives from `rpm`/`tpm`) with an immediate 429 and keeps its slot
        until the stream ends; waiting here first means such jobs queue instead of failing.
        """
        limit = self._limits.get(target.model) if target.routed else None
        if limit is None:
            yield
            return
        if limit.locked():
            log.info("provider_limit_wait", model=target.model)
        async with limit:
            yield

    def stream(
        self, target: Target, request: JobRequest, result: StreamResult
    ) -> AsyncIterator[str]:
        """The answer's text pieces; `result` is filled in as the provider reports.

        A stream that ends without a finish reason raises StreamBroken.
        """
        direct = self._direct.get(target.model) if target.routed else None
        if direct is None:
            return self._stream_routed(target, request, result)
        return self._stream_direct(direct, target, request, result)

    def _finish(self, target: Target, result: StreamResult) -> None:
        if result.finish_reason is None:
            raise StreamBroken("the provider's stream ended without a finish reason")
        self._settle(target, result)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _stream_routed(
        self, target: Target, request: JobRequest, result: StreamResult
    ) -> AsyncIterator[str]:
        """Through LiteLLM's Router (or `acompletion`) and its stream wrapper."""
        kwargs: dict[str, Any] = {
            **request.options,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response: Any = None
        try:
            response = await self._open(target, kwargs)
            async for chunk in response:
                self._record(chunk, result)
                if chunk.choices:
                    text = chunk.choices[0].delta.content
                    if text:
                        yield text
        except JobError:
            raise
        except Exception as exc:  # noqa: BLE001 (every provider failure becomes a JobError)
            raise self.map_error(exc, provider=self._provider(target)) from None
        finally:
            if response is not None:
                await response.aclose()
        self._finish(target, result)

    async def _stream_direct(
        self, direct: _Direct, target: Target, request: JobRequest, result: StreamResult
    ) -> AsyncIterator[str]:
        """OpenAI's wire format read by the worker itself: LiteLLM builds the request and
        names the errors, but no LiteLLM object is made per chunk (see worker/sse.py)."""
        try:
            url, headers, body = direct.request(request)
        except Exception as exc:  # noqa: BLE001 (LiteLLM rejects parameters with several types)
            raise self.map_error(exc, provider="openai") from None
        if self._session is None:
            self._session = sse.new_session()
        result.provider, result.model_id = "openai", direct.model_id
        try:
            async for chunk in sse.stream_chunks(self._session, url, headers=headers, body=body):
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
                        result.model = chunk.get("model") or result.model
                        self._record_final(chunk, result)  # some servers send usage here
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
                else:
                    self._record_final(chunk, result)
        except sse.HTTPStatusError as error:
            raise self._direct_error(direct, error) from None
        except sse.StreamCut as error:
            raise StreamBroken(str(error)) from None
        except ConnectionError as error:
            raise ProviderUnavailable(str(error)) from None
        except ValueError as error:  # a `data:` line that is not JSON
            raise StreamBroken(f"the provider sent an unreadable chunk: {error}") from None
        self._finish(target, result)

    def _record_final(self, chunk: dict[str, Any], result: StreamResult) -> None:
        """The usage at the end of a stream, or an error event in the middle of one."""
        if "error" in chunk:
            detail = self.redact(json.dumps(chunk["error"]))[:300]
            raise StreamBroken(f"the provider reported an error mid-stream: {detail}")
        usage = chunk.get("usage")
        if usage:
            result.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )

    def _direct_error(self, direct: _Direct, error: sse.HTTPStatusError) -> JobError:
        detail = self.redact(error.body)[:300]
        code = _error_code(error.body)
        if code in _BY_CODE:
            return _BY_CODE[code](error, detail)
        mapped = self.map_error(
            direct.config.get_error_class(error.body, error.status, error.headers),
            provider="openai",
        )
        if isinstance(mapped, RateLimited) and mapped.retry_after_s is None:
            with contextlib.suppress(KeyError, ValueError):
                mapped.retry_after_s = float(error.headers["Retry-After"])
        return mapped

    async def _open(self, target: Target, kwargs: dict[str, Any]) -> Any:
        if target.routed:
            response = await self._router.acompletion(model=target.model, **kwargs)
        else:
            response = await litellm.acompletion(model=target.model, num_retries=0, **kwargs)
        if response is None:
            # Seen with `drop_params` on a 422: LiteLLM swallowed the provider's error.
            raise ProviderError("the provider rejected the request and sent no answer")
        return response

    def _record(self, chunk: Any, result: StreamResult) -> None:
        """Take what the provider reported. Only chunks with choices name the model that
        answered: LiteLLM's own usage chunk carries the requested name instead, and after a
        fallback the chunks carry the fallback's model, provider and deployment id."""
        if chunk.choices:
            hidden = getattr(chunk, "_hidden_params", None) or {}
            result.model = hidden.get("provider_response_model") or chunk.model or result.model
            result.provider = hidden.get("custom_llm_provider") or result.provider
            result.model_id = hidden.get("model_id") or result.model_id
            if chunk.choices[0].finish_reason:
                result.finish_reason = chunk.choices[0].finish_reason
        usage = getattr(chunk, "usage", None)
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            result.usage = Usage(
                prompt_tokens=int(usage.prompt_tokens or 0),
                completion_tokens=int(usage.completion_tokens or 0),
            )
            # LiteLLM reports 0.0 for a model it has no price for; a free model's 0.0 comes
            # back from `cost_usd`'s own lookup.
            cost = getattr(usage, "cost", None)
            result.cost_usd = round(float(cost), 10) if cost else None

    def _settle(self, target: Target, result: StreamResult) -> None:
        """Name the deployment that answered, and its provider where no chunk said it."""
        entry = self._catalog.entry(result.model_id) if target.routed else None
        if entry is not None:
            result.deployment = str(entry["litellm_params"]["model"])
        else:
            result.deployment = self._deployment_model(target)
        if result.provider is None:
            with contextlib.suppress(Exception):
                result.provider = litellm.get_llm_provider(result.deployment)[1]

    def map_error(self, exc: BaseException, *, provider: str | None = None) -> JobError:
        """A LiteLLM exception as the contract's error (section 4), with secrets masked.

        `provider` (the LiteLLM provider called) lets a provider's raw error be typed first.
        """
        if isinstance(exc, provider_errors.MidStreamFallbackError):
            return self._map_stream_error(exc, provider)
        if isinstance(exc, RouterRateLimitError):
            # Every deployment of the model is in the Router's cooldown after errors: wait it
            # out, then the provider's own answer decides.
            return RateLimited(
                f"the model's deployments are cooling down after errors: {exc.model}",
                retry_after_s=float(exc.cooldown_time),
            )
        if isinstance(exc, BaseLLMException) and provider is not None:
            exc = _normalised(exc, provider)
        return self._map_typed(exc)

    def _map_typed(self, exc: BaseException) -> JobError:
        """The provider's error code decides first (it is the same across providers), then
        LiteLLM's exception type, then the HTTP status."""
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

    def _map_stream_error(
        self, exc: provider_errors.MidStreamFallbackError, provider: str | None
    ) -> JobError:
        """LiteLLM wraps whatever ended a stream; for providers that answer an error only once
        the stream is read (Gemini), the wrapped error is the provider's 429/401/... itself."""
        inner = exc.original_exception
        mapped = None if inner is None else self.map_error(inner, provider=provider)
        if isinstance(mapped, RateLimited) and mapped.retry_after_s is None:
            mapped.retry_after_s = _retry_after_s(exc)
        if mapped is None or isinstance(mapped, ProviderUnavailable | InternalError):
            detail = self.redact(str(getattr(inner or exc, "message", "") or inner or exc))[:300]
            return StreamBroken(f"the provider's stream broke off: {detail}")
        return mapped

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _SECRET_PATTERNS.sub("[redacted]", text)

    def cost_usd(self, result: StreamResult, target: Target) -> float | None:
        """The answer's price, or None where nothing knows it; never raises.

        In order: LiteLLM's own figure for the stream, the answering deployment's
        `model_info` prices, LiteLLM's price table for its model string.
        """
        if result.cost_usd is not None or result.usage is None:
            return result.cost_usd
        usage = result.usage
        entry = self._catalog.entry(result.model_id) if target.routed else None
        info = {} if entry is None else entry["model_info"]
        if all(info.get(key) is not None for key in _PRICE_KEYS):
            prompt = usage.prompt_tokens * float(info["input_cost_per_token"])
            completion = usage.completion_tokens * float(info["output_cost_per_token"])
            return round(prompt + completion, 10)
        model = result.deployment or self._deployment_model(target)
        priced = self._priced[model] if model in self._priced else _in_price_table(model)
        if not priced:
            return None
        try:
            prompt, completion = litellm.cost_per_token(
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
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

    def _provider(self, target: Target) -> str | None:
        try:
            return str(litellm.get_llm_provider(self._deployment_model(target))[1])
        except Exception:  # noqa: BLE001 (an unknown provider only loses error normalisation)
            return None

    def _deployment_model(self, target: Target) -> str:
        if not target.routed:
            return target.model
        for entry in self._catalog.model_list:
            if entry["model_name"] == target.model:
                return str(entry["litellm_params"]["model"])
        return target.model


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


# A deployment may be streamed directly only with these settings: anything else (headers,
# an organization, another secret store) is left to the Router, which knows them all.
_DIRECT_PARAMS = frozenset(
    {
        "model",
        "api_base",
        "api_key",
        "max_parallel_requests",
        "rpm",
        "tpm",
        "timeout",
        "stream_timeout",
    }
)


_MAPPED_OPTIONS_KEPT = 256


@dataclass(frozen=True)
class _Direct:
    """A deployment in OpenAI's wire format that the worker streams itself."""

    model: str
    model_id: str
    api_base: str | None
    api_key: str | None
    config: Any
    # LiteLLM's parameter mapping by the job's options: most of the cost of building a
    # request, and the same for every job that asks with the same options.
    _mapped: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    def request(self, request: JobRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        """URL, headers and body exactly as LiteLLM would send them."""
        optional = dict(self._optional_params(request.options))
        api_base = self.config.get_api_base(self.api_base)
        api_key = self.config.get_api_key(self.api_key)
        headers = self.config.validate_environment(
            {}, self.model, request.messages, optional, {}, api_key=api_key, api_base=api_base
        )
        url = self.config.get_complete_url(api_base, api_key, self.model, optional, {}, stream=True)
        body = self.config.transform_request(self.model, request.messages, optional, {}, headers)
        body.update(body.pop("extra_body", None) or {})  # the openai SDK would merge it
        return url, headers, body

    def _optional_params(self, options: dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(options, sort_keys=True)
        mapped = self._mapped.get(key)
        if mapped is None:
            if len(self._mapped) >= _MAPPED_OPTIONS_KEPT:
                self._mapped.clear()
            mapped = self._mapped[key] = get_optional_params(
                model=self.model,
                custom_llm_provider="openai",
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
        return mapped


def _direct_routes(catalog: ModelCatalog) -> dict[str, _Direct]:
    """Model names whose only deployment speaks OpenAI's format with plain settings and no
    fallbacks: for them nothing in the Router would act, and its stream wrapper costs ~15x
    the CPU per chunk of reading the stream directly."""
    with_fallbacks = {
        name
        for key in _FALLBACK_KEYS
        for rule in catalog.router_settings.get(key) or []
        for name in rule
    }
    routes: dict[str, _Direct] = {}
    for name in catalog.names - with_fallbacks:
        entries = [entry for entry in catalog.model_list if entry["model_name"] == name]
        params = entries[0]["litellm_params"]
        if len(entries) != 1 or not set(params) <= _DIRECT_PARAMS:
            continue
        try:
            model, provider, _, _ = litellm.get_llm_provider(params["model"])
        except Exception:  # noqa: BLE001, S112 (validated at load; stay on the Router if not)
            continue
        secrets = [_secret(params.get(key)) for key in ("api_base", "api_key")]
        if provider != "openai" or any(value is _UNRESOLVABLE for value in secrets):
            continue
        routes[name] = _Direct(
            model=model,
            model_id=entries[0]["model_info"]["id"],
            api_base=secrets[0],
            api_key=secrets[1],
            config=ProviderConfigManager.get_provider_chat_config(
                model=model, provider=LlmProviders.OPENAI
            ),
        )
    return routes


_UNRESOLVABLE = object()


def _secret(value: object) -> Any:
    """A setting's value, reading `os.environ/NAME`; other secret stores stay the Router's."""
    if value is None or not isinstance(value, str):
        return value
    if value.startswith("os.environ/"):
        return os.environ.get(value.removeprefix("os.environ/"))
    if "/" in value.split(":", 1)[0] and not value.startswith(("http://", "https://")):
        return _UNRESOLVABLE
    return value


def _error_code(body: str) -> str | None:
    """OpenAI's `error.code` from an error body, where there is one."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _in_price_table(model: str) -> bool:
    try:
        litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 (LiteLLM raises for models it does not know)
        return False
    return True


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
