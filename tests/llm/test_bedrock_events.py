"""The Bedrock ConverseStream reader: event-stream frames, then Converse events."""

from __future__ import annotations

import base64

import pytest

from simulator.bedrock import event_message
from tests.llm.wire import collect, event, exception, pieces
from worker.errors import StreamBroken
from worker.jobs import Usage
from worker.llm.bedrock_events import bedrock_events, frames
from worker.llm.events import Answered, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from worker.llm.transport import HTTPStatus

MODEL = "us.anthropic.claude-sonnet-4-6"


def text(index: int, piece: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}})


def ending(stop: str = "end_turn", **usage: int) -> list[bytes]:
    return [
        event("messageStop", {"stopReason": stop}),
        event(
            "metadata", {"usage": {"inputTokens": 11, "outputTokens": 3, **usage}, "metrics": {}}
        ),
    ]


async def read(*chunks: bytes) -> list[StreamEvent]:
    return await collect(bedrock_events(pieces(chunks), model=MODEL))


async def test_text_stop_reason_and_usage_from_the_metadata_after_message_stop() -> None:
    events = await read(
        event("messageStart", {"role": "assistant"}), text(0, "Hel"), text(0, "lo 日本語"),
        event("contentBlockStop", {"contentBlockIndex": 0}), *ending(),
    )  # fmt: skip
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo 日本語")]
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert (answered.model, answered.provider, answered.finish_reason) == (MODEL, "bedrock", "stop")
    assert answered.usage == Usage(prompt_tokens=11, completion_tokens=3)


async def test_the_simulators_frames_decode_too() -> None:
    body = event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "ß"}})
    assert await read(body, *ending()) == [TextDelta("ß"), (await read(*ending()))[0]]


async def test_frames_split_anywhere_across_reads() -> None:
    body = b"".join([text(0, "a" * 300), text(0, "b"), *ending()])
    split = [body[i : i + 7] for i in range(0, len(body), 7)]
    decoded = [headers[":event-type"] async for headers, _ in frames(pieces(split))]
    assert decoded == ["contentBlockDelta", "contentBlockDelta", "messageStop", "metadata"]


async def test_tool_use_starts_then_input_pieces_by_tool_index() -> None:
    start = {"toolUse": {"toolUseId": "tooluse_1", "name": "weather"}}
    events = await read(
        text(0, "Checking."),
        event("contentBlockStart", {"contentBlockIndex": 1, "start": start}),
        event(
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}},
        ),
        event(
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}},
        ),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        *ending("tool_use"),
    )
    assert events[:-1] == [
        TextDelta("Checking."),
        ToolCallDelta(0, "tooluse_1", "weather"),
        ToolCallDelta(0, None, None, '{"city":'),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == "tool_calls"


async def test_reasoning_text_signature_and_redacted_content_become_thinking_blocks() -> None:
    def reasoning(index: int, content: dict[str, str]) -> bytes:
        return event(
            "contentBlockDelta",
            {"contentBlockIndex": index, "delta": {"reasoningContent": content}},
        )

    events = await read(
        reasoning(0, {"text": "Let me "}), reasoning(0, {"text": "think."}),
        reasoning(0, {"signature": "sig-abc"}), event("contentBlockStop", {"contentBlockIndex": 0}),
        reasoning(1, {"redactedContent": "ZW5jcnlwdGVk"}),
        event("contentBlockStop", {"contentBlockIndex": 1}), text(2, "Done."), *ending(),
    )  # fmt: skip
    assert events[:-1] == [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Done.")]
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert answered.thinking_blocks == (
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
        {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},  # not Converse-wrapped: kept
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
     ("max_tokens", "length"), ("stop_sequence", "stop")],
)  # fmt: skip
async def test_stop_reasons_in_the_contracts_words(stop: str, finish: str) -> None:
    events = await read(text(0, "a"), *ending(stop))
    assert isinstance(events[-1], Answered)
    assert events[-1].finish_reason == finish


async def test_cache_reads_are_prompt_tokens_and_reported_as_cached() -> None:
    events = await read(text(0, "a"), *ending(cacheReadInputTokens=100, cacheWriteInputTokens=5))
    assert isinstance(events[-1], Answered)
    assert events[-1].usage == Usage(prompt_tokens=116, completion_tokens=3, cached_tokens=100)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("throttlingException", 429), ("serviceUnavailableException", 503),
     ("modelStreamErrorException", 424), ("validationException", 400)],
)  # fmt: skip
async def test_exception_frames_carry_bedrocks_status(kind: str, status: int) -> None:
    with pytest.raises(HTTPStatus) as raised:
        await read(text(0, "a"), exception(kind, "Too many tokens, please wait."))
    assert raised.value.status == status
    assert "please wait" in raised.value.body


async def test_a_dropped_connection_is_a_broken_stream() -> None:
    with pytest.raises(StreamBroken):
        await read(text(0, "a"))
    with pytest.raises(StreamBroken):
        await read(text(0, "a"), text(0, "b")[:9])  # cut inside a frame


async def test_a_corrupt_frame_is_a_broken_stream() -> None:
    body = bytearray(text(0, "abc"))
    body[-6] ^= 0xFF
    with pytest.raises(StreamBroken):
        await read(bytes(body), *ending())


async def test_redacted_content_is_unwrapped_as_litellm_does() -> None:
    """Converse wraps Claude's redacted `data` in base64 once more; LiteLLM's shape is Claude's."""
    claude_data = "EkCa4G+fww1x/MedVZJ2liLmsl9auNslvMJaUasBJ41G6Jrgb5/DDXH8x51VknaWIuayX1q42yW8"
    wrapped = base64.b64encode(claude_data.encode()).decode()
    delta = {"reasoningContent": {"redactedContent": wrapped}}
    events = await read(
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}),
        text(1, "a"),
        *ending(),
    )
    answered = events[-1]
    assert isinstance(answered, Answered)
    assert answered.thinking_blocks == ({"type": "redacted_thinking", "data": claude_data},)
