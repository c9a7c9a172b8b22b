"""The UI parts the worker writes to `response_data.parts` (contract 8) are valid UI parts
for every accepted AI SDK major, by the SDK's own `validateUIMessages`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.aisdk import validate_ui_parts
from worker.messages import to_openai

ANSWER_PARTS: list[dict[str, Any]] = [
    {"type": "reasoning", "text": "The user wants the weather."},
    {"type": "text", "text": "Let me look."},
    {
        "type": "tool-weather",
        "toolCallId": "call_1",
        "state": "input-available",
        "input": {"city": "Paris"},
    },
]


def test_the_parts_of_an_answer_pass_the_sdks_validation() -> None:
    validate_ui_parts(ANSWER_PARTS)


def test_a_text_only_answer_passes_the_sdks_validation() -> None:
    validate_ui_parts([{"type": "text", "text": "Hello!"}])


def test_the_helper_rejects_what_the_sdk_rejects() -> None:
    with pytest.raises(AssertionError, match="validateUIMessages rejected"):
        validate_ui_parts([{"type": "tool-weather", "state": "input-available"}])


def test_an_answer_with_the_apps_tool_output_continues_the_conversation() -> None:
    """The app sets the call's output on the worker's parts and sends them back."""
    answered = [*ANSWER_PARTS[:2], {**ANSWER_PARTS[2], "state": "output-available", "output": 20}]
    validate_ui_parts(answered)
    assert to_openai([{"id": "a1", "role": "assistant", "parts": answered}]) == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "reasoning_content": "The user wants the weather.",
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "20"},
    ]
