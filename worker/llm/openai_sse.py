"""The lean reader of OpenAI's wire format (server-sent events over aiohttp).

The hot path of the worker: one `data:` line per chunk, decoded with `json.loads` and
nothing else. LiteLLM's provider config still builds each request (parameters, URL,
headers, body) and types each error; no LiteLLM object is made per chunk.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import litellm
from litellm.types.utils import LlmProviders
from litellm.utils import ProviderConfigManager, get_optional_params

from worker.errors import JobError, ProviderUnavailable, StreamBroken
from worker.jobs import JobRequest, Usage
from worker.llm.catalog import ModelCatalog, env_reference
from worker.llm.errors import ErrorMapper
from worker.llm.events import Answered, Routed, StreamEvent, TextDelta
from worker.llm.target import Target

PROVIDER = "openai"
# A deployment is read directly only with these settings: anything else (headers, an
# organization, another secret store) is left to the Router, which knows them all.
_LEAN_PARAMS = frozenset(
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


class _HTTPStatus(Exception):
    """The server answered with an error status before streaming."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers)


@dataclass(frozen=True)
class OpenAIDeployment:
    """A models-file deployment in OpenAI's format that the worker reads itself."""

    model: str  # as the provider knows it, without LiteLLM's prefix
    deployment: str  # the models file's LiteLLM model string
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
                custom_llm_provider=PROVIDER,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
        return mapped


def lean_deployments(catalog: ModelCatalog) -> dict[str, OpenAIDeployment]:
    """Model names whose only deployment speaks OpenAI's format with plain settings and no
    fallbacks: for them nothing in the Router would act, and its stream wrapper costs ~15x
    the CPU per chunk of reading the stream directly."""
    lean: dict[str, OpenAIDeployment] = {}
    for name in catalog.names - catalog.with_fallbacks:
        entries = catalog.deployments(name)
        params = entries[0]["litellm_params"]
        if len(entries) != 1 or not set(params) <= _LEAN_PARAMS:
            continue
        try:
            model, provider, _, _ = litellm.get_llm_provider(params["model"])
        except Exception:  # noqa: BLE001, S112 (validated at load; stay on the Router if not)
            continue
        settings = [_plain_setting(params.get(key)) for key in ("api_base", "api_key")]
        if provider != PROVIDER or any(value is _ELSEWHERE for value in settings):
            continue
        lean[name] = OpenAIDeployment(
            model=model,
            deployment=str(params["model"]),
            model_id=entries[0]["model_info"]["id"],
            api_base=settings[0],
            api_key=settings[1],
            config=ProviderConfigManager.get_provider_chat_config(
                model=model, provider=LlmProviders.OPENAI
            ),
        )
    return lean


_ELSEWHERE = object()


def _plain_setting(value: object) -> Any:
    """A setting's value, reading `os.environ/NAME`; other secret stores stay the Router's."""
    if value is None or not isinstance(value, str):
        return value
    name = env_reference(value)
    if name is not None:
        return os.environ.get(name)
    if "/" in value.split(":", 1)[0] and not value.startswith(("http://", "https://")):
        return _ELSEWHERE
    return value


def new_session() -> aiohttp.ClientSession:
    # No pool limit (the worker's concurrency bounds the streams) and no total timeout (the
    # job's first-token, stall and total timeouts govern); only connecting is bounded here.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, connect=30),
    )


class OpenAIStreams:
    """Reads OpenAI-format streams on one shared aiohttp session."""

    def __init__(self, errors: ErrorMapper) -> None:
        self._errors = errors
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(
        self, deployment: OpenAIDeployment, target: Target, request: JobRequest
    ) -> AsyncIterator[StreamEvent]:
        try:
            url, headers, body = deployment.request(request)
        except Exception as exc:  # noqa: BLE001 (LiteLLM rejects parameters with several types)
            raise self._errors.map(exc, provider=PROVIDER) from None
        if self._session is None:
            self._session = new_session()
        yield Routed(PROVIDER)
        model, finish_reason, usage = target.model, None, None
        try:
            async for chunk in _chunks(self._session, url, headers=headers, body=body):
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                        model = chunk.get("model") or model
                        usage = self._final(chunk) or usage  # some servers send usage here
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield TextDelta(text)
                else:
                    usage = self._final(chunk) or usage
        except _HTTPStatus as error:
            raise self._errors.http(
                error.status, error.body, error.headers, config=deployment.config, provider=PROVIDER
            ) from None
        except JobError:
            raise
        except ConnectionError as error:
            raise ProviderUnavailable(str(error)) from None
        except ValueError as error:  # a `data:` line that is not JSON
            raise StreamBroken(f"the provider sent an unreadable chunk: {error}") from None
        if finish_reason is None:
            raise StreamBroken("the provider's stream ended without a finish reason")
        yield Answered(
            model=model,
            provider=PROVIDER,
            finish_reason=finish_reason,
            usage=usage,
            cost_usd=None,
            deployment=deployment.deployment,
            model_id=deployment.model_id,
        )

    def _final(self, chunk: dict[str, Any]) -> Usage | None:
        """The usage at the end of a stream, or an error event in the middle of one."""
        if "error" in chunk:
            raise self._errors.in_stream(chunk["error"])
        usage = chunk.get("usage")
        if not usage:
            return None
        return Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )


async def _chunks(
    session: aiohttp.ClientSession, url: str, *, headers: Mapping[str, str], body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """POST `body` and yield each decoded `data:` chunk until `[DONE]` or the end of the body.

    Closing the generator (or cancelling its reader) closes the connection, which is how the
    provider learns to stop generating.
    """
    try:
        response = await session.post(url, json=body, headers=headers)
    except aiohttp.ClientError as error:
        raise ConnectionError(f"cannot reach the provider: {type(error).__name__}") from None
    complete = False
    try:
        if response.status >= 400:
            text = await response.text(errors="replace")
            raise _HTTPStatus(response.status, text, response.headers)
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            yield json.loads(payload)
        complete = True
    except aiohttp.ClientError as error:
        raise StreamBroken(f"the stream broke off: {type(error).__name__}") from None
    finally:
        # A finished stream gives its connection back for reuse; anything else (an error,
        # a cancelled job) closes it so that the provider stops generating.
        if complete:
            response.release()
        else:
            response.close()
