"""The lean reader of OpenAI's wire format: OpenAI, Azure OpenAI and compatible servers.

One `data:` line per chunk, decoded with `json.loads` and nothing else; a chunk whose delta
holds only text takes the shortest path. What else a delta may carry (reasoning from
compatible servers as `reasoning_content` or `reasoning`, a `refusal`, tool-call fragments by
index) becomes its own event, in the order the delta holds it. Azure's first chunk (no
choices, only `prompt_filter_results`) and any other chunk without choices carry nothing but,
at the end, the usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from worker.errors import StreamBroken
from worker.jobs import Usage
from worker.llm.events import (
    Answered,
    ReasoningDelta,
    RefusalDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from worker.llm.transport import as_int, finish_reason


class ProviderReported(Exception):
    """An error event inside a stream that had begun (its payload, unredacted)."""

    def __init__(self, error: object) -> None:
        super().__init__("the provider reported an error mid-stream")
        self.error = error


async def openai_events(
    payloads: AsyncIterator[bytes], *, model: str, provider: str
) -> AsyncIterator[StreamEvent]:
    """The events of one OpenAI-format stream, ending with `Answered` (deployment unnamed)."""
    loads = json.loads
    ended: str | None = None
    usage: Usage | None = None
    async for payload in payloads:
        chunk = loads(payload)
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text and len(delta) == 1:
                    yield TextDelta(text)
                else:
                    for event in _rich(delta):
                        yield event
            if choice.get("finish_reason"):
                ended = finish_reason(choice["finish_reason"])
                model = chunk.get("model") or model
        elif "error" in chunk:
            raise ProviderReported(chunk["error"])
        if chunk.get("usage"):  # after the finish, or with it on some servers
            usage = openai_usage(chunk["usage"]) or usage
    if ended is None:
        raise StreamBroken("the provider's stream ended without a finish reason")
    yield Answered(
        model=model,
        provider=provider,
        finish_reason=ended,
        usage=usage,
        cost_usd=None,
        deployment="",
        model_id=None,
    )


def _rich(delta: dict[str, Any]) -> list[StreamEvent]:
    """Everything a delta carries besides plain text, reasoning first, text last."""
    events: list[StreamEvent] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningDelta(reasoning))
    refusal = delta.get("refusal")
    if isinstance(refusal, str) and refusal:
        events.append(RefusalDelta(refusal))
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        events.append(
            ToolCallDelta(
                index=int(call.get("index") or 0),
                id=call.get("id") or None,
                name=function.get("name") or None,
                arguments=function.get("arguments") or "",
            )
        )
    text = delta.get("content")
    if isinstance(text, str) and text:
        events.append(TextDelta(text))
    return events


def openai_usage(usage: dict[str, Any]) -> Usage | None:
    """OpenAI's usage object, with the cached and reasoning details where it reports them."""
    prompt = as_int(usage.get("prompt_tokens"))
    completion = as_int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=prompt or 0,
        completion_tokens=completion or 0,
        reasoning_tokens=as_int(completion_details.get("reasoning_tokens")),
        cached_tokens=as_int(prompt_details.get("cached_tokens")),
    )
