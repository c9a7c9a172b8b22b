"""Requests for the lean readers, built by LiteLLM: parameters, body, URL, headers, signature.

One class per provider, each a deployment of the models file whose settings a lean reader
covers. LiteLLM maps the job's options (`get_optional_params`), transforms the messages
with the provider's own config, builds the URL and the auth headers (SigV4 by its Bedrock
signer), and names the provider's errors (`config.get_error_class`). The worker only sends
the bytes and reads the answer with the reader of that wire format.

`lean_deployment` says which deployments qualify, or why one does not (that deployment's
model then streams through LiteLLM's Router and its wrapper): only the settings listed here,
secrets written inline or as `os.environ/NAME`, and no per-job feature that LiteLLM handles
with network calls of its own (`declines`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import litellm
from litellm.litellm_core_utils.url_utils import ensure_api_route
from litellm.llms.azure.common_utils import BaseAzureLLM
from litellm.llms.bedrock.base_aws_llm import pop_aws_auth_params
from litellm.llms.bedrock.chat.converse_handler import BedrockConverseLLM
from litellm.llms.bedrock.common_utils import BedrockModelInfo
from litellm.llms.vertex_ai.gemini.transformation import (
    _with_default_output_budget,
    transform_request_body,
)
from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import VertexLLM
from litellm.types.router import GenericLiteLLMParams
from litellm.types.utils import LlmProviders
from litellm.utils import ProviderConfigManager, get_optional_params

from worker.errors import AuthError
from worker.jobs import JobRequest
from worker.llm.bedrock_events import bedrock_events
from worker.llm.catalog import env_reference
from worker.llm.events import StreamEvent
from worker.llm.gemini_sse import gemini_events
from worker.llm.openai_sse import openai_events
from worker.llm.transport import body_chunks, sse_stream

# Settings the Router reads to route (it still does) and the worker reads for its limits.
_ROUTING_PARAMS = frozenset(
    {"model", "max_parallel_requests", "rpm", "tpm", "weight", "order", "timeout", "stream_timeout"}
)
_PLAIN_PARAMS = {
    "openai": frozenset({"api_base", "api_key"}),
    "azure": frozenset({"api_base", "api_key", "api_version"}),
    "gemini": frozenset({"api_base", "api_key"}),
    "bedrock": frozenset(
        {
            "aws_region_name",
            "aws_bedrock_runtime_endpoint",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
        }
    ),
}
_MAPPED_OPTIONS_KEPT = 256
_NO_KEY = "the deployment has no key; the operator must check the key in the models file"
_CREDENTIALS_TTL_S = 300.0
_LITELLM_PROVIDERS = {
    "openai": LlmProviders.OPENAI,
    "azure": LlmProviders.AZURE,
    "gemini": LlmProviders.GEMINI,
    "bedrock": LlmProviders.BEDROCK,
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request, ready to send."""

    url: str
    headers: dict[str, str]
    data: bytes


@dataclass
class LeanDeployment:
    """A models-file deployment that a lean reader streams; subclasses build its requests."""

    provider: str
    model: str  # as the provider knows it, without LiteLLM's prefix
    deployment: str  # the models file's LiteLLM model string
    model_id: str
    settings: dict[str, Any]  # the plain settings, `os.environ/NAME` read
    config: Any = None
    _mapped: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.config = ProviderConfigManager.get_provider_chat_config(
            model=self.model, provider=_LITELLM_PROVIDERS[self.provider]
        )

    async def prepare(self, request: JobRequest) -> Prepared:
        raise NotImplementedError

    def events(self, session: aiohttp.ClientSession, sent: Prepared) -> AsyncIterator[StreamEvent]:
        """Send the request and read the answer with this deployment's reader."""
        payloads = sse_stream(session, sent.url, headers=sent.headers, data=sent.data)
        return openai_events(payloads, model=self.model, provider=self.provider)

    def declines(self, request: JobRequest) -> str | None:
        """Why LiteLLM's wrapper must take this job instead, or None."""
        return None

    def optional_params(self, options: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """LiteLLM's parameter mapping of the job's options: most of the cost of building a
        request, and the same for every job that asks with the same options (a copy, since
        LiteLLM's transforms pop from it)."""
        key = json.dumps(options, sort_keys=True, default=str)
        mapped = self._mapped.get(key)
        if mapped is None:
            if len(self._mapped) >= _MAPPED_OPTIONS_KEPT:
                self._mapped.clear()
            mapped = self._mapped[key] = get_optional_params(
                model=self.model, custom_llm_provider=self.provider, stream=True, **extra, **options
            )
        return dict(mapped)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


class OpenAIDeployment(LeanDeployment):
    async def prepare(self, request: JobRequest) -> Prepared:
        optional = self.optional_params(request.options, stream_options={"include_usage": True})
        api_base = self.config.get_api_base(self.settings.get("api_base"))
        api_key = self.config.get_api_key(self.settings.get("api_key"))
        headers = self.config.validate_environment(
            {}, self.model, request.messages, optional, {}, api_key=api_key, api_base=api_base
        )
        url = self.config.get_complete_url(api_base, api_key, self.model, optional, {}, stream=True)
        body = self.config.transform_request(self.model, request.messages, optional, {}, headers)
        body.update(body.pop("extra_body", None) or {})  # the openai SDK would merge it
        return Prepared(url, {**headers, "Content-Type": "application/json"}, _json(body))


class AzureDeployment(LeanDeployment):
    """Azure OpenAI by key: a dated `api_version` on the deployment's path with `api-key`, or
    the v1 API (`v1`, `latest`, `preview`) on `…/openai/v1/` with a bearer key."""

    async def prepare(self, request: JobRequest) -> Prepared:
        optional = self.optional_params(request.options, stream_options={"include_usage": True})
        version = self.settings.get("api_version") or os.environ.get("AZURE_API_VERSION")
        api_base = BaseAzureLLM.resolve_azure_api_base(self.settings.get("api_base"))
        key = (
            self.settings.get("api_key")
            or os.environ.get("AZURE_OPENAI_API_KEY")
            or os.environ.get("AZURE_API_KEY")
        )
        if not key:  # never LiteLLM's Entra ID fallback here: it blocks, and it is not asked for
            raise AuthError(_NO_KEY)
        if BaseAzureLLM.is_azure_v1_api_version(version):
            url = ensure_api_route(api_base or "", "openai/v1") + "/chat/completions"
            headers = {"Authorization": f"Bearer {key}"}
        else:
            url = BaseAzureLLM._get_base_azure_url(
                api_base,
                {"api_version": version},
                f"/openai/deployments/{self.model}/chat/completions",
            )
            headers = BaseAzureLLM._base_validate_azure_environment(
                {}, GenericLiteLLMParams(api_key=key)
            )
        body = self.config.transform_request(self.model, request.messages, optional, {}, headers)
        body.update(body.pop("extra_body", None) or {})
        return Prepared(url, {**headers, "Content-Type": "application/json"}, _json(body))


@dataclass
class GeminiDeployment(LeanDeployment):
    """Google AI Studio by key."""

    _gemini_target: tuple[Any, str] | None = field(default=None, repr=False)

    async def prepare(self, request: JobRequest) -> Prepared:
        optional = self.optional_params(request.options)
        auth, url = self._target()
        headers = self.config.validate_environment(
            None, self.model, request.messages, optional, {}, api_key=auth
        )
        # The transform mutates what it is given; the job's messages stay the job's.
        body = transform_request_body(
            messages=copy.deepcopy(request.messages), model=self.model,
            optional_params=optional, custom_llm_provider="gemini", litellm_params={},
            cached_content=None,
        )  # fmt: skip
        body = _with_default_output_budget(body, self.model, "gemini", None)
        return Prepared(url, dict(headers), _json(dict(body)))

    def _target(self) -> tuple[Any, str]:
        """The key header and the URL, as LiteLLM builds them (the same for every job)."""
        if self._gemini_target is None:
            key = self.settings.get("api_key") or litellm.get_secret_str("GEMINI_API_KEY")
            if not key:
                raise AuthError(_NO_KEY)
            auth, url = VertexLLM()._get_token_and_url(
                model=self.model, auth_header=None, gemini_api_key=key, vertex_project=None,
                vertex_location=None, vertex_credentials=None, stream=True,
                custom_llm_provider="gemini", api_base=self.settings.get("api_base"),
            )  # fmt: skip
            self._gemini_target = (auth, str(url))
        return self._gemini_target

    def events(self, session: aiohttp.ClientSession, sent: Prepared) -> AsyncIterator[StreamEvent]:
        payloads = sse_stream(session, sent.url, headers=sent.headers, data=sent.data)
        return gemini_events(payloads, model=self.model)

    def declines(self, request: JobRequest) -> str | None:
        for message in request.messages:
            if message.get("role") == "assistant" and message.get("tool_calls"):
                return "a tool conversation: LiteLLM retries a rejected thought signature"
        return _litellm_only_parts(request)


@dataclass
class BedrockDeployment(LeanDeployment):
    """Bedrock ConverseStream, signed with SigV4 by LiteLLM's signer; credentials resolved by
    LiteLLM off the event loop (it may read files or call STS) and kept for five minutes."""

    _signer: BedrockConverseLLM = field(default_factory=BedrockConverseLLM, repr=False)
    _credentials: Any = None
    _resolved_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def _current_credentials(self) -> Any:
        if self._credentials is None or time.monotonic() - self._resolved_at > _CREDENTIALS_TTL_S:
            async with self._lock:
                if (
                    self._credentials is None
                    or time.monotonic() - self._resolved_at > _CREDENTIALS_TTL_S
                ):
                    auth = pop_aws_auth_params(dict(self.settings))
                    self._credentials = await asyncio.to_thread(
                        self._signer.resolve_credentials, auth, self.region
                    )
                    self._resolved_at = time.monotonic()
        return self._credentials

    @property
    def region(self) -> str:
        return str(
            self.settings.get("aws_region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-west-2"
        )

    async def prepare(self, request: JobRequest) -> Prepared:
        credentials = await self._current_credentials()
        optional = self.optional_params(request.options)
        optional.pop("stream", None)  # LiteLLM's handler takes it out before the transform
        body = self.config._transform_request(
            model=self.model, messages=copy.deepcopy(request.messages),
            optional_params=optional, litellm_params={}, headers={},
        )  # fmt: skip
        endpoint, _ = self._signer.get_runtime_endpoint(
            api_base=None,
            aws_bedrock_runtime_endpoint=self.settings.get("aws_bedrock_runtime_endpoint"),
            aws_region_name=self.region,
        )
        model_id = self._signer.encode_model_id(model_id=self.model)
        url = f"{endpoint.rstrip('/')}/model/{model_id}/converse-stream"
        data = json.dumps(body)
        signed = self._signer.get_request_headers(
            credentials=credentials, aws_region_name=self.region, extra_headers=None,
            endpoint_url=url, data=data, headers={"Content-Type": "application/json"},
        )  # fmt: skip
        return Prepared(url, dict(signed.headers), data.encode())

    def events(self, session: aiohttp.ClientSession, sent: Prepared) -> AsyncIterator[StreamEvent]:
        pieces = body_chunks(session, sent.url, headers=sent.headers, data=sent.data)
        return bedrock_events(pieces, model=self.model)

    def declines(self, request: JobRequest) -> str | None:
        return _litellm_only_parts(request)


def _litellm_only_parts(request: JobRequest) -> str | None:
    """Message parts that LiteLLM resolves with network calls of its own (a remote image or file
    to inline, a context cache to create): its wrapper handles them, with its checks."""
    for message in request.messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            if "cache_control" in part:
                return "a cache_control part (LiteLLM manages the provider's cache)"
            url = _part_url(part)
            if url is not None and not url.startswith("data:"):
                return "a remote media URL (LiteLLM inlines it)"
    return None


def _part_url(part: dict[str, Any]) -> str | None:
    for key, inner in (("image_url", "url"), ("file", "file_id"), ("file", "file_data")):
        value = part.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get(inner), str):
            return str(value[inner])
    return None


_KINDS: dict[str, Callable[..., LeanDeployment]] = {
    "openai": OpenAIDeployment,
    "azure": AzureDeployment,
    "gemini": GeminiDeployment,
    "bedrock": BedrockDeployment,
}


def lean_deployment(entry: dict[str, Any]) -> LeanDeployment | str:
    """The lean deployment for a models-file entry, or why it has none."""
    params = entry["litellm_params"]
    try:
        model, provider, _, _ = litellm.get_llm_provider(
            params["model"], custom_llm_provider=params.get("custom_llm_provider")
        )
    except Exception:  # noqa: BLE001 (validated at load; stay on the Router if not)
        return "LiteLLM names no provider for it"
    unsupported = _unsupported(params, provider)
    if unsupported is not None:
        return unsupported
    if provider == "bedrock":
        model = model.removeprefix("converse/")
    settings: dict[str, Any] = {}
    for key in _PLAIN_PARAMS[provider] & set(params):
        value = _plain_setting(params[key])
        if value is _ELSEWHERE:
            return f"{key} from a secret store only LiteLLM reads"
        settings[key] = value
    return _KINDS[provider](
        provider=provider,
        model=model,
        deployment=str(params["model"]),
        model_id=str(entry["model_info"]["id"]),
        settings=settings,
    )


def _unsupported(params: dict[str, Any], provider: str) -> str | None:
    if provider not in _KINDS:
        return f"no lean reader for provider {provider}"
    extra = set(params) - _ROUTING_PARAMS - _PLAIN_PARAMS[provider]
    if extra:
        return f"settings only LiteLLM's wrapper applies: {', '.join(sorted(extra))}"
    if provider == "bedrock":
        model = str(params["model"]).split("/", 1)[-1].removeprefix("converse/")
        if BedrockModelInfo.get_bedrock_route(model) != "converse":
            return "a Bedrock model outside ConverseStream"
    if provider == "azure" and not (params.get("api_key") or os.environ.get("AZURE_API_KEY")):
        return "Azure without a key (Entra ID tokens are LiteLLM's)"
    return None


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
