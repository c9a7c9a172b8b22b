"""Streaming through LiteLLM's Router (or `acompletion` for unlisted models) and its wrapper.

The path for every deployment the lean reader does not take: other providers, several
deployments, fallbacks, settings only LiteLLM knows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import litellm
from litellm.router import Router

from worker.errors import JobError, ProviderError, StreamBroken
from worker.jobs import JobRequest, Usage
from worker.llm.catalog import ModelCatalog, provider_of
from worker.llm.errors import ErrorMapper
from worker.llm.events import Answered, Routed, StreamEvent, TextDelta
from worker.llm.target import Target


@dataclass(slots=True)
class _Reported:
    """What the chunks said so far; private to one stream."""

    model: str
    provider: str | None = None
    model_id: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None


class RoutedStreams:
    """Opens answer streams through the Router and reads LiteLLM's chunk objects."""

    def __init__(self, catalog: ModelCatalog, router: Router, errors: ErrorMapper) -> None:
        self._catalog = catalog
        self._router = router
        self._errors = errors

    async def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        kwargs: dict[str, Any] = {
            **request.options,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reported = _Reported(model=target.model)
        response: Any = None
        routed = False
        try:
            response = await self._open(target, kwargs)
            async for chunk in response:
                _record(chunk, reported)
                if chunk.choices:
                    text = chunk.choices[0].delta.content
                    if text:
                        if not routed:
                            routed = True
                            yield Routed(reported.provider)
                        yield TextDelta(text)
        except JobError:
            raise
        except Exception as exc:  # noqa: BLE001 (every provider failure becomes a JobError)
            deployment = self._catalog.deployment_model(target)
            raise self._errors.map(exc, provider=provider_of(deployment)) from None
        finally:
            if response is not None:
                await response.aclose()
        yield self._answered(target, reported)

    async def _open(self, target: Target, kwargs: dict[str, Any]) -> Any:
        if target.routed:
            response = await self._router.acompletion(model=target.model, **kwargs)
        else:
            response = await litellm.acompletion(model=target.model, num_retries=0, **kwargs)
        if response is None:
            # Seen with `drop_params` on a 422: LiteLLM swallowed the provider's error.
            raise ProviderError("the provider rejected the request and sent no answer")
        return response

    def _answered(self, target: Target, reported: _Reported) -> Answered:
        """Name the deployment that answered, and its provider where no chunk said it."""
        if reported.finish_reason is None:
            raise StreamBroken("the provider's stream ended without a finish reason")
        entry = self._catalog.entry(reported.model_id) if target.routed else None
        if entry is not None:
            deployment = str(entry["litellm_params"]["model"])
        else:
            deployment = self._catalog.deployment_model(target)
        return Answered(
            model=reported.model,
            provider=reported.provider or provider_of(deployment),
            finish_reason=reported.finish_reason,
            usage=reported.usage,
            cost_usd=reported.cost_usd,
            deployment=deployment,
            model_id=reported.model_id,
        )


def _record(chunk: Any, reported: _Reported) -> None:
    """Take what the provider reported. Only chunks with choices name the model that
    answered: LiteLLM's own usage chunk carries the requested name instead, and after a
    fallback the chunks carry the fallback's model, provider and deployment id."""
    if chunk.choices:
        hidden = getattr(chunk, "_hidden_params", None) or {}
        reported.model = hidden.get("provider_response_model") or chunk.model or reported.model
        reported.provider = hidden.get("custom_llm_provider") or reported.provider
        reported.model_id = hidden.get("model_id") or reported.model_id
        if chunk.choices[0].finish_reason:
            reported.finish_reason = chunk.choices[0].finish_reason
    usage = getattr(chunk, "usage", None)
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        reported.usage = Usage(
            prompt_tokens=int(usage.prompt_tokens or 0),
            completion_tokens=int(usage.completion_tokens or 0),
        )
        # LiteLLM reports 0.0 for a model it has no price for; a free model's 0.0 comes
        # back from the pricing's own lookup.
        cost = getattr(usage, "cost", None)
        reported.cost_usd = round(float(cost), 10) if cost else None
