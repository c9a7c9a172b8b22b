"""Streaming through LiteLLM's Router (or `acompletion` for unlisted models) and its wrapper.

The path for every model the lean readers do not take (other providers, settings or router
features only LiteLLM applies, jobs whose parts LiteLLM resolves over the network). It yields
the same events as the lean readers, read from LiteLLM's chunk objects: `reasoning_content`,
`thinking_blocks` (pieces merged into whole blocks), `tool_calls` fragments, `refusal`, text;
the finish reason in the contract's words; usage with its reasoning and cached details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm.router import Router

from worker.errors import JobError, ProviderError, StreamBroken
from worker.jobs import JobRequest, Usage
from worker.llm.catalog import ModelCatalog, provider_of
from worker.llm.errors import ErrorMapper
from worker.llm.events import (
    Answered,
    ReasoningDelta,
    RefusalDelta,
    Routed,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from worker.llm.target import Target
from worker.llm.transport import as_int, finish_reason


@dataclass(slots=True)
class _Reported:
    """What the chunks said so far; private to one stream."""

    model: str
    provider: str | None = None
    model_id: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    thinking_blocks: list[dict[str, Any]] = field(default_factory=list)


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
                    events = _events(chunk.choices[0].delta, reported)
                    if events and not routed:
                        routed = True
                        yield Routed(reported.provider)
                    for event in events:
                        yield event
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
            thinking_blocks=tuple(reported.thinking_blocks),
        )


def _events(delta: Any, reported: _Reported) -> list[StreamEvent]:
    """What one LiteLLM delta carries, in the lean readers' order: reasoning, refusal, tool-call
    fragments, text. Thinking blocks are gathered for the end."""
    events: list[StreamEvent] = []
    reasoning = getattr(delta, "reasoning_content", None)
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningDelta(reasoning))
    for block in getattr(delta, "thinking_blocks", None) or ():
        _add_thinking(reported.thinking_blocks, dict(block))
    refusal = getattr(delta, "refusal", None)
    if isinstance(refusal, str) and refusal:
        events.append(RefusalDelta(refusal))
    for call in getattr(delta, "tool_calls", None) or ():
        function = getattr(call, "function", None)
        events.append(
            ToolCallDelta(
                index=int(getattr(call, "index", 0) or 0),
                id=getattr(call, "id", None) or None,
                name=getattr(function, "name", None) or None,
                arguments=getattr(function, "arguments", None) or "",
            )
        )
    text = delta.content
    if text:
        events.append(TextDelta(text))
    return events


def _add_thinking(blocks: list[dict[str, Any]], block: dict[str, Any]) -> None:
    """LiteLLM streams a thinking block in pieces (text, then its signature): one block each."""
    last = blocks[-1] if blocks else None
    if (
        block.get("type") == "thinking"
        and last is not None
        and last.get("type") == "thinking"
        and not last.get("signature")
    ):
        last["thinking"] = (last.get("thinking") or "") + (block.get("thinking") or "")
        if block.get("signature"):
            last["signature"] = block["signature"]
        return
    blocks.append(block)


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
            reported.finish_reason = finish_reason(str(chunk.choices[0].finish_reason))
    usage = getattr(chunk, "usage", None)
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        reported.usage = Usage(
            prompt_tokens=int(usage.prompt_tokens or 0),
            completion_tokens=int(usage.completion_tokens or 0),
            reasoning_tokens=as_int(getattr(completion_details, "reasoning_tokens", None)),
            cached_tokens=as_int(getattr(prompt_details, "cached_tokens", None)),
        )
        # LiteLLM reports 0.0 for a model it has no price for; a free model's 0.0 comes
        # back from the pricing's own lookup.
        cost = getattr(usage, "cost", None)
        reported.cost_usd = round(float(cost), 10) if cost else None
