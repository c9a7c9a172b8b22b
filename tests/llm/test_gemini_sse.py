"""The Gemini reader, from the bytes up (CRLF-separated SSE events, as Google sends them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.llm.wire import collect, pieces, sse
from worker.errors import StreamBroken
from worker.jobs import Usage
from worker.llm.events import Answered, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from worker.llm.gemini_sse import gemini_events
from worker.llm.openai_sse import ProviderReported
from worker.llm.transport import sse_data


def response(*parts: dict[str, Any], finish: str | None = None, **usage: int) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 9, **usage},
        "modelVersion": "gemini-3.5-flash-001",
    }


async def read(*payloads: dict[str, Any]) -> list[StreamEvent]:
    chunks = sse(*payloads, end=b"\r\n\r\n", done=False)
    return await collect(gemini_events(sse_data(pieces(chunks)), model="gemini-3.5-flash"))


async def test_text_with_the_raw_finish_reason_and_the_last_usage() -> None:
    events = await read(
        response({"text": "Bon"}), response({"text": "jour 🚀"}),
        response({"text": ""}, finish="STOP", candidatesTokenCount=2, totalTokenCount=11),
    )  # fmt: skip
    assert events[:-1] == [TextDelta("Bon"), TextDelta("jour 🚀")]
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert (answered.model, answered.provider, answered.finish_reason) == (
        "gemini-3.5-flash-001", "gemini", "stop",
    )  # fmt: skip
    assert answered.usage == Usage(prompt_tokens=9, completion_tokens=2)


async def test_thought_parts_are_reasoning_and_thoughts_count_as_completion_tokens() -> None:
    events = await read(
        response({"text": "Weighing it", "thought": True}),
        response({"text": "Answer", "thoughtSignature": "c2ln"}),
        response(
            finish="STOP", candidatesTokenCount=1, thoughtsTokenCount=40, cachedContentTokenCount=4
        ),
    )
    assert events[:-1] == [ReasoningDelta("Weighing it"), TextDelta("Answer")]
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert answered.usage == Usage(9, 41, reasoning_tokens=40, cached_tokens=4)


async def test_function_calls_come_whole_with_their_thought_signature_in_the_id() -> None:
    events = await read(
        response(
            {
                "functionCall": {"name": "weather", "args": {"city": "Paris"}},
                "thoughtSignature": "U0lH",
            },
            {"functionCall": {"name": "time", "args": {}}},
        ),
        response(finish="STOP", candidatesTokenCount=8),
    )
    first, second, answered = events
    assert isinstance(first, ToolCallDelta)
    assert isinstance(second, ToolCallDelta)
    assert (first.index, first.name, json.loads(first.arguments)) == (
        0,
        "weather",
        {"city": "Paris"},
    )
    assert first.id is not None
    assert first.id.startswith("call_")
    assert first.id.endswith("__thought__U0lH")
    assert (second.index, second.name, second.arguments) == (1, "time", "{}")
    assert second.id is not None
    assert "__thought__" not in second.id
    assert isinstance(answered, Answered)
    assert answered.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "reason", ["SAFETY", "PROHIBITED_CONTENT", "RECITATION", "BLOCKLIST", "SPII"]
)
async def test_policy_endings_are_content_filter(reason: str) -> None:
    events = await read(response({"text": "Some"}), response(finish=reason))
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == "content_filter"


async def test_max_tokens_is_length_and_a_blocked_prompt_is_content_filter() -> None:
    events = await read(response({"text": "a"}, finish="MAX_TOKENS"))
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == "length"
    blocked = await read({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}})
    assert isinstance(blocked[-1], Answered)
    assert blocked[-1].finish_reason == "content_filter"


async def test_an_error_inside_a_200_stream_is_reported() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(ProviderReported):
        await read(response({"text": "a"}), error)


async def test_a_stream_that_stops_without_a_finish_reason_is_broken() -> None:
    with pytest.raises(StreamBroken):
        await read(response({"text": "a"}), response({"text": "b"}))


async def test_an_event_over_512_kib_is_read_whole() -> None:
    """aiohttp's own line reader raises LineTooLong here; the reader splits lines itself."""
    big = "x" * (700 * 1024)
    chunks = sse(response({"text": big}, finish="STOP", candidatesTokenCount=1), end=b"\r\n\r\n")
    split = [piece[i : i + 65536] for piece in chunks for i in range(0, len(piece), 65536)]
    events = await collect(gemini_events(sse_data(pieces(split)), model="m"))
    assert events[0] == TextDelta(big)
