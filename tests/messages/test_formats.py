"""Each message's format is told by its shape, and the formats mix in one conversation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.messages.cases import PNG, PNG_BASE64, WEATHER_CALL
from worker.errors import InvalidRequest
from worker.messages import MediaUrl, convert, to_openai


def test_a_conversation_may_mix_the_three_formats() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},  # OpenAI (and model) form
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Weather?"}]},  # UI
        {  # model
            "role": "assistant",
            "content": [
                {
                    "type": "tool-call",
                    "toolCallId": "call_1",
                    "toolName": "weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},  # OpenAI
    ]
    assert to_openai(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (  # one model-only part makes it a model message, where image_url has no place
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": PNG_BASE64},
                    {"type": "image_url", "image_url": PNG},
                ],
            },
            "messages.0.content.1: the user message cannot carry 'image_url' parts",
        ),
        (  # a tool message without tool_call_id and a list content is a model message
            {"role": "tool", "content": [{"type": "text", "text": "sunny"}]},
            "messages.0.content.0: a tool message takes tool-result parts",
        ),
        (  # an OpenAI file part cannot carry a model file's `data`
            {"role": "user", "content": [{"type": "file", "file": {}, "data": "x"}]},
            "messages.0.content.0: a file part needs `file.file_data` or `file.file_id`",
        ),
        (
            {"role": "developer", "content": [{"type": "reasoning", "text": "x"}]},
            "messages.0.role: an AI SDK model message's role is one of system, user, assistant",
        ),
    ],
)
def test_a_message_mixing_formats_fails_at_the_first_foreign_part(
    message: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai([message])
    assert error in caught.value.message


def test_no_messages_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="at least 1 item"):
        to_openai([])


def test_http_media_urls_are_recorded_where_the_job_wrote_them() -> None:
    converted = convert(
        [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": "https://a.test/x.png"}],
            },
            {
                "role": "user",
                "parts": [
                    {"type": "text", "text": "and"},
                    {
                        "type": "file",
                        "mediaType": "image/png",
                        "url": PNG,
                    },  # data: is never fetched
                    {"type": "file", "mediaType": "application/pdf", "url": "http://b.test/y.pdf"},
                ],
            },
            {"role": "user", "content": [{"type": "image", "image": "https://c.test/z.jpg"}]},
            {
                "role": "user",
                "content": [{"type": "file", "file": {"file_id": "https://d.test/f"}}],
            },
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]},
        ]
    )
    assert converted.media_urls == (
        MediaUrl("messages.0.content.0", "https://a.test/x.png", "image"),
        MediaUrl("messages.1.parts.2", "http://b.test/y.pdf", "file"),
        MediaUrl("messages.2.content.0", "https://c.test/z.jpg", "image"),
        MediaUrl("messages.3.content.0", "https://d.test/f", "file"),
    )
