"""The lean reader of Gemini's wire format (`streamGenerateContent?alt=sse`).

Each event is a whole `GenerateContentResponse`: parts of text (`thought: true` ones are
reasoning), `functionCall`s sent whole, the raw `finishReason` on the last candidate only
(LiteLLM's own parser says "stop" on every chunk; the raw field is read here), and a
cumulative `usageMetadata` on every event, of which only the last counts. An error can
arrive inside a 200 stream; a prompt blocked before any candidate arrives as
`promptFeedback.blockReason`.

Thought signatures: the one on a `functionCall` part is what Gemini needs back to continue a
conversation after the tool ran, so it travels in the tool call's id exactly as LiteLLM puts
it there (`call_…__thought__<signature>`), and LiteLLM restores it when the next job's
messages carry that id. Signatures on text parts are not kept (Gemini does not require them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litellm.litellm_core_utils.prompt_templates.factory import (
    encode_tool_call_id_with_signature,
)

from worker.errors import StreamBroken
from worker.jobs import Usage
from worker.llm.events import Answered, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from worker.llm.openai_sse import ProviderReported
from worker.llm.transport import as_int, finish_reason

PROVIDER = "gemini"


async def gemini_events(
    payloads: AsyncIterator[bytes], *, model: str
) -> AsyncIterator[StreamEvent]:
    """The events of one Gemini stream, ending with `Answered` (deployment unnamed)."""
    loads = json.loads
    ended: str | None = None
    usage_metadata: dict[str, Any] | None = None
    calls = 0
    async for payload in payloads:
        chunk = loads(payload)
        candidates = chunk.get("candidates")
        if candidates:
            candidate = candidates[0]
            parts = (candidate.get("content") or {}).get("parts") or ()
            for part in parts:
                text = part.get("text")
                if text and len(part) == 1:
                    yield TextDelta(text)
                elif text:
                    yield ReasoningDelta(text) if part.get("thought") else TextDelta(text)
                elif "functionCall" in part:
                    yield _tool_call(calls, part)
                    calls += 1
            if candidate.get("finishReason"):
                ended = finish_reason(candidate["finishReason"])
        elif "error" in chunk:
            raise ProviderReported(chunk["error"])
        elif (chunk.get("promptFeedback") or {}).get("blockReason"):
            ended = "content_filter"
        if "usageMetadata" in chunk:
            usage_metadata = chunk["usageMetadata"]
        model = chunk.get("modelVersion") or model
    if ended is None:
        raise StreamBroken("the provider's stream ended without a finish reason")
    if calls and ended == "stop":
        ended = "tool_calls"  # Gemini says STOP after function calls; LiteLLM says tool_calls
    yield Answered(
        model=model,
        provider=PROVIDER,
        finish_reason=ended,
        usage=None if usage_metadata is None else gemini_usage(usage_metadata),
        cost_usd=None,
        deployment="",
        model_id=None,
    )


def _tool_call(index: int, part: dict[str, Any]) -> ToolCallDelta:
    call = part["functionCall"] or {}
    call_id = encode_tool_call_id_with_signature(
        f"call_{uuid.uuid4().hex[:28]}", part.get("thoughtSignature")
    )
    return ToolCallDelta(
        index=index,
        id=call_id,
        name=str(call.get("name") or ""),
        arguments=json.dumps(call.get("args") or {}, ensure_ascii=False),
    )


def gemini_usage(metadata: dict[str, Any]) -> Usage | None:
    """Gemini's usage as OpenAI counts it: `candidatesTokenCount` leaves out the thoughts, which
    are completion tokens too (as LiteLLM's `calculate_usage` adds them)."""
    prompt = as_int(metadata.get("promptTokenCount"))
    candidates = as_int(metadata.get("candidatesTokenCount"))
    thoughts = as_int(metadata.get("thoughtsTokenCount"))
    if candidates is None and thoughts is None:
        return None
    return Usage(
        prompt_tokens=prompt or 0,
        completion_tokens=(candidates or 0) + (thoughts or 0),
        reasoning_tokens=thoughts,
        cached_tokens=as_int(metadata.get("cachedContentTokenCount")),
    )
