"""The OpenAI-format reader (OpenAI, Azure OpenAI, compatible servers), from the bytes up."""

from __future__ import annotations

from typing import Any

import pytest

from tests.llm.wire import collect, pieces, sse
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
from worker.llm.openai_sse import ProviderReported, openai_events
from worker.llm.transport import sse_data


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [choice],
        **extra,
    }


USAGE = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}


async def read(*payloads: dict[str, Any], done: bool = True) -> list[StreamEvent]:
    return await collect(
        openai_events(sse_data(pieces(sse(*payloads, done=done))), model="asked", provider="openai")
    )


async def test_text_then_the_ending_with_the_reported_model_and_usage() -> None:
    events = await read(
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
        chunk({"content": "lo 日本語🚀"}), chunk({}, "stop"), USAGE,
    )  # fmt: skip
    *deltas, answered = events
    assert deltas == [TextDelta("Hel"), TextDelta("lo 日本語🚀")]
    assert isinstance(answered, Answered)
    assert (answered.model, answered.provider, answered.finish_reason) == (
        "gpt-4o-mini-2024-07-18", "openai", "stop",
    )  # fmt: skip
    assert answered.usage == Usage(prompt_tokens=12, completion_tokens=30)


async def test_reasoning_of_compatible_servers_in_either_field_comes_before_the_text() -> None:
    events = await read(
        chunk({"reasoning_content": "Let me think"}), chunk({"reasoning": ", then"}),
        chunk({"reasoning_content": " decide.", "content": "Yes"}), chunk({}, "stop"),
    )  # fmt: skip
    assert events[:-1] == [
        ReasoningDelta("Let me think"), ReasoningDelta(", then"), ReasoningDelta(" decide."),
        TextDelta("Yes"),
    ]  # fmt: skip


async def test_a_refusal_streams_as_refusal_deltas() -> None:
    events = await read(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't "}), chunk({"refusal": "help with that."}), chunk({}, "stop"),
    )  # fmt: skip
    assert events[:-1] == [RefusalDelta("I can't "), RefusalDelta("help with that.")]


async def test_parallel_tool_calls_interleaved_by_index() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    events = await read(
        chunk(call(0, id="call_a", type="function", function={"name": "weather", "arguments": ""})),
        chunk(call(1, id="call_b", type="function", function={"name": "time", "arguments": ""})),
        chunk(call(0, function={"arguments": '{"city": '})),
        chunk(call(1, function={"arguments": '{"tz": "UTC"}'})),
        chunk(call(0, function={"arguments": '"Paris"}'})),
        chunk({}, "tool_calls"),
    )
    assert events[:-1] == [
        ToolCallDelta(0, "call_a", "weather", ""), ToolCallDelta(1, "call_b", "time", ""),
        ToolCallDelta(0, None, None, '{"city": '), ToolCallDelta(1, None, None, '{"tz": "UTC"}'),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]  # fmt: skip
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == "tool_calls"


async def test_azure_prompt_filter_chunk_and_a_content_filter_ending() -> None:
    first = {"choices": [], "model": "", "prompt_filter_results": [{"prompt_index": 0}]}
    events = await read(first, chunk({"content": "Some"}), chunk({}, "content_filter"))
    assert events[0] == TextDelta("Some")
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == "content_filter"


async def test_usage_details_reasoning_and_cached_tokens() -> None:
    usage = {
        "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 32},
    }  # fmt: skip
    events = await read(
        chunk({"content": "x"}), chunk({}, "length"), {"choices": [], "usage": usage}
    )
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert answered.finish_reason == "length"
    assert answered.usage == Usage(100, 50, reasoning_tokens=32, cached_tokens=64)


async def test_a_dropped_connection_without_a_finish_reason_is_a_broken_stream() -> None:
    with pytest.raises(StreamBroken):
        await read(chunk({"content": "Hel"}), done=False)


async def test_an_error_event_mid_stream_is_reported() -> None:
    with pytest.raises(ProviderReported) as reported:
        await read(chunk({"content": "Hel"}), {"error": {"message": "overloaded"}})
    assert reported.value.error == {"message": "overloaded"}
