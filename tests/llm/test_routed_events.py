"""The Router path yields the lean readers' events, read from LiteLLM's chunk objects."""

from __future__ import annotations

from litellm.types.utils import Delta  # noqa: TID251 (LiteLLM's own chunk type is the input)

from worker.llm.events import ReasoningDelta, TextDelta, ToolCallDelta
from worker.llm.routed import _events, _Reported


def test_reasoning_tool_fragments_and_text_from_a_litellm_delta() -> None:
    reported = _Reported(model="m")
    delta = Delta(
        content="Answer",
        reasoning_content="Thinking",
        tool_calls=[{"index": 1, "id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": '{"a"'}}],
    )  # fmt: skip
    assert _events(delta, reported) == [
        ReasoningDelta("Thinking"),
        ToolCallDelta(1, "call_1", "weather", '{"a"'),
        TextDelta("Answer"),
    ]


def test_thinking_block_pieces_merge_into_whole_blocks() -> None:
    reported = _Reported(model="m")
    for block in (
        {"type": "thinking", "thinking": "Let me ", "signature": None},
        {"type": "thinking", "thinking": "think.", "signature": None},
        {"type": "thinking", "thinking": "", "signature": "sig"},
        {"type": "redacted_thinking", "data": "ZW5j"},
        {"type": "thinking", "thinking": "Again.", "signature": "sig2"},
    ):
        _events(Delta(content=None, thinking_blocks=[block]), reported)
    assert reported.thinking_blocks == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "ZW5j"},
        {"type": "thinking", "thinking": "Again.", "signature": "sig2"},
    ]
