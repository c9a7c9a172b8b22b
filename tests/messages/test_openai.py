"""OpenAI chat messages pass through whole once their structure is sound (contract 8)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.errors import InvalidRequest
from worker.messages import to_openai

PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0xLjQ="


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


@pytest.mark.parametrize(
    "part",
    [
        {"type": "text", "text": "Hello"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": PNG},
        {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
        {
            "type": "file",
            "file": {"file_id": "https://example.com/a.pdf", "format": "application/pdf"},
        },
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ],
    ids=lambda part: part["type"] + ":" + str(sorted(part.get(part["type"], {}) or {})),
)
def test_every_user_part_type_passes_through_as_given(part: dict[str, Any]) -> None:
    assert to_openai([_user(part)]) == [_user(part)]


def test_a_tool_round_trip_passes_through_whole() -> None:
    messages = [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "The user wants weather.",
            "thinking_blocks": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "ZW5j"},
            ],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":20}'},
        {"role": "assistant", "content": [{"type": "text", "text": "20 °C."}], "refusal": None},
    ]
    assert to_openai(messages) == messages


def test_keys_outside_the_chat_format_are_dropped() -> None:
    message = {"id": "m1", "createdAt": "2026-01-01", "role": "user", "content": "hi"}
    assert to_openai([message]) == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "robot", "content": "x"}], "messages.0.role: must be one of system, developer"),
        (["hi"], "messages.0: a message must be an object"),
        ([{"role": "user"}], "messages.0: a message needs `content` or `parts`"),
        ([{"role": "assistant", "content": None}], "messages.0: an assistant message needs"),
        ([{"role": "user", "content": 5}], "messages.0.content: must be a string, a list"),
        (
            [
                {"role": "user", "content": "a"},
                _user({"type": "text", "text": "b"}, {"type": "video"}),
            ],
            "messages.1.content.1: the user message takes parts of type text, image_url, file,"
            " input_audio, not 'video'",
        ),
        ([_user({"text": "no type"})], "messages.0.content.0: a part needs a string `type`"),
        ([_user({"type": "text", "text": 3})], "messages.0.content.0: `text` must be a string"),
        (
            [_user({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}})],
            "messages.0.content.0: `image_url.url` must be an https: or data: URL, not file:",
        ),
        (
            [_user({"type": "image_url", "image_url": {"url": "data:image/png,base64"}})],
            None,  # a data: URL without ;base64 is still a data: URL
        ),
        (
            [_user({"type": "image_url", "image_url": {"url": "data:nonsense"}})],
            "messages.0.content.0: `image_url.url` is not a valid data: URL",
        ),
        (
            [_user({"type": "file", "file": {"filename": "a.pdf"}})],
            "messages.0.content.0: a file part needs `file.file_data` or `file.file_id`",
        ),
        (
            [_user({"type": "file", "file": {"file_data": "JVBERi0="}})],
            "messages.0.content.0: `file.file_data` must be a data: URL",
        ),
        (
            [_user({"type": "file", "file": {"file_id": "www.example.com/a.pdf"}})],
            "messages.0.content.0: `file.file_id` must be an https: or data: URL",
        ),
        (
            [_user({"type": "input_audio", "input_audio": {"data": "AA==", "format": "midi"}})],
            "messages.0.content.0: `input_audio.format` must be one of wav, mp3",
        ),
        (
            [{"role": "assistant", "content": [{"type": "image_url", "image_url": PNG}]}],
            "messages.0.content.0: the assistant message takes parts of type text, refusal",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "function", "id": "c"}],
                }
            ],
            "messages.0.tool_calls.0: a tool call needs a `function` with `name` and `arguments`",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ],
            "messages.0.tool_calls.0.function: `arguments` must be a string",
        ),
        (
            [{"role": "assistant", "content": "", "thinking_blocks": [{"type": "thought"}]}],
            "messages.0.thinking_blocks.0: a thinking block's `type` is",
        ),
        ([{"role": "tool", "content": "42"}], "messages.0: `tool_call_id` must be a string"),
        ([{"role": "system", "content": [{"type": "image_url", "image_url": PNG}]}], "system"),
    ],
)
def test_malformed_messages_name_the_message_and_part(
    messages: list[Any], error: str | None
) -> None:
    if error is None:
        to_openai(messages)
        return
    with pytest.raises(InvalidRequest) as caught:
        to_openai(messages)
    assert error in caught.value.message
    assert caught.value.message.startswith("invalid request_data: messages.")
