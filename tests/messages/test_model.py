"""AI SDK model messages (what `convertToModelMessages` returns, what `streamText` takes).

Each input is checked against the SDK's own `modelMessageSchema` in the majors that take
it: AI SDK 7's `{"type": "url" | "data" | "text", ...}` wrappers are 7's alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest

from tests.aisdk import run_sdk
from tests.messages.cases import PDF, PDF_BASE64, PNG, PNG_BASE64, WEATHER_CALL
from worker.errors import InvalidRequest
from worker.messages import to_openai

ALL = ("ai5", "ai6", "ai7")


@dataclass(frozen=True)
class Case:
    name: str
    model: list[dict[str, Any]]
    openai: list[dict[str, Any]]
    aliases: tuple[str, ...] = ALL


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def _image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(output: dict[str, Any]) -> list[dict[str, Any]]:
    part = {"type": "tool-result", "toolCallId": "call_1", "toolName": "weather", "output": output}
    return [{"role": "tool", "content": [part]}]


def _tool_message(content: str) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": "call_1", "content": content}]


TEXT = {"type": "text", "text": "Look:"}
PDF_FILE = {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}}

CASES = [
    Case(
        "image_base64",
        _user(TEXT, {"type": "image", "image": PNG_BASE64, "mediaType": "image/png"}),
        _user(TEXT, _image_url(PNG)),
    ),
    Case(
        "image_base64_type_detected",
        _user({"type": "image", "image": PNG_BASE64}),
        _user(_image_url(PNG)),
    ),
    Case(
        "image_https_url",
        _user({"type": "image", "image": "https://example.com/cat.jpg"}),
        _user(_image_url("https://example.com/cat.jpg")),
    ),
    Case("image_data_url", _user({"type": "image", "image": PNG}), _user(_image_url(PNG))),
    Case(
        "image_v7_data_wrapper",
        _user(
            {
                "type": "image",
                "image": {"type": "data", "data": PNG_BASE64},
                "mediaType": "image/png",
            }
        ),
        _user(_image_url(PNG)),
        aliases=("ai7",),
    ),
    Case(
        "file_base64",
        _user(
            {
                "type": "file",
                "data": PDF_BASE64,
                "mediaType": "application/pdf",
                "filename": "a.pdf",
            }
        ),
        _user(PDF_FILE),
    ),
    Case(
        "file_data_url_image",
        _user({"type": "file", "data": PNG, "mediaType": "image/png"}),
        _user(_image_url(PNG)),
    ),
    Case(
        "file_base64_mp3",
        _user({"type": "file", "data": "SUQz", "mediaType": "audio/mpeg"}),
        _user({"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}),
    ),
    Case(
        "file_https_url",
        _user(
            {"type": "file", "data": "https://example.com/a.pdf", "mediaType": "application/pdf"}
        ),
        _user(
            {
                "type": "file",
                "file": {"file_id": "https://example.com/a.pdf", "format": "application/pdf"},
            }
        ),
    ),
    Case(
        "file_v7_url_wrapper",
        _user(
            {
                "type": "file",
                "data": {"type": "url", "url": "https://example.com/cat.png"},
                "mediaType": "image/png",
            }
        ),
        _user(_image_url("https://example.com/cat.png")),
        aliases=("ai7",),
    ),
    Case(
        "file_v7_data_wrapper",
        _user(
            {
                "type": "file",
                "data": {"type": "data", "data": PDF_BASE64},
                "mediaType": "application/pdf",
                "filename": "a.pdf",
            }
        ),
        _user(PDF_FILE),
        aliases=("ai7",),
    ),
    Case(
        "file_v7_text_wrapper",
        _user({"type": "file", "data": {"type": "text", "text": "hi"}, "mediaType": "text/plain"}),
        _user({"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}),
        aliases=("ai7",),
    ),
    Case(
        "reasoning_and_tool_call",
        [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "reasoning",
                        "text": "Weather, then.",
                        "providerOptions": {"anthropic": {"signature": "c2ln"}},
                    },
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool-call",
                        "toolCallId": "call_1",
                        "toolName": "weather",
                        "input": {"city": "Paris"},
                    },
                ],
            }
        ],
        [
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [WEATHER_CALL],
                "reasoning_content": "Weather, then.",
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "Weather, then.", "signature": "c2ln"}
                ],
            }
        ],
    ),
    Case(
        "tool_call_only",
        [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool-call",
                        "toolCallId": "call_1",
                        "toolName": "weather",
                        "input": {"city": "Paris"},
                    }
                ],
            }
        ],
        [{"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]}],
    ),
    Case(
        "tool_result_text", _tool_result({"type": "text", "value": "sunny"}), _tool_message("sunny")
    ),
    Case(
        "tool_result_json",
        _tool_result({"type": "json", "value": {"temp": 20}}),
        _tool_message('{"temp":20}'),
    ),
    Case(
        "tool_result_error_text",
        _tool_result({"type": "error-text", "value": "no such city"}),
        _tool_message("no such city"),
    ),
    Case(
        "tool_result_error_json",
        _tool_result({"type": "error-json", "value": {"code": 404}}),
        _tool_message('{"code":404}'),
    ),
    Case(
        "tool_result_content",
        _tool_result({"type": "content", "value": [{"type": "text", "text": "sunny"}]}),
        _tool_message('[{"type":"text","text":"sunny"}]'),
    ),
    Case(
        "tool_result_execution_denied",
        _tool_result({"type": "execution-denied", "reason": "not allowed"}),
        _tool_message("not allowed"),
        aliases=("ai6", "ai7"),
    ),
    Case(
        "tool_approvals_dropped",
        [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool-call",
                        "toolCallId": "call_1",
                        "toolName": "weather",
                        "input": {},
                    },
                    {"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "call_1"},
                ],
            },
            {
                "role": "tool",
                "content": [
                    {"type": "tool-approval-response", "approvalId": "ap1", "approved": True},
                    {
                        "type": "tool-result",
                        "toolCallId": "call_1",
                        "toolName": "weather",
                        "output": {"type": "text", "value": "sunny"},
                    },
                ],
            },
        ],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**WEATHER_CALL, "function": {"name": "weather", "arguments": "{}"}}
                ],
            },
            *_tool_message("sunny"),
        ],
        aliases=("ai6", "ai7"),
    ),
]


@functools.cache
def _schema_errors() -> dict[str, dict[str, Any]]:
    answers, _ = run_sdk([{"op": "validate-model", "messages": case.model} for case in CASES])
    return {case.name: answer for case, answer in zip(CASES, answers, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_model_parts_become_openai_messages(case: Case) -> None:
    assert to_openai(case.model) == case.openai


@pytest.mark.parametrize(
    ("case", "alias"),
    [(case, alias) for case in CASES for alias in case.aliases],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_the_sdk_takes_each_model_message_as_valid(case: Case, alias: str) -> None:
    answer = _schema_errors()[case.name][alias]
    assert answer["ok"], answer.get("error")


def test_v7_wrappers_are_v7s_alone() -> None:
    """The fixtures above mark 7's wrappers as 7's: 5 and 6 reject them."""
    answer = _schema_errors()["file_v7_data_wrapper"]
    assert (answer["ai5"]["ok"], answer["ai6"]["ok"], answer["ai7"]["ok"]) == (False, False, True)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {"role": "user", "content": [TEXT, {"type": "image", "image": "not base64!"}]},
            "messages.0.content.1: `data` is neither a URL nor base64",
        ),
        (
            {"role": "user", "content": [{"type": "image", "image": "gs://bucket/cat.png"}]},
            "messages.0.content.0: `url` must be an https: or data: URL, not gs:",
        ),
        (
            {"role": "user", "content": [{"type": "file", "data": PDF_BASE64}]},
            "messages.0.content.0: a file part needs a `mediaType`",
        ),
        (
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "data": {"type": "reference", "reference": {"openai": "file-1"}},
                        "mediaType": "application/pdf",
                    }
                ],
            },
            "messages.0.content.0: a provider file reference cannot be sent",
        ),
        (
            {"role": "user", "content": [{"type": "image", "image": {"openai": "file-1"}}]},
            "messages.0.content.0: a provider file reference cannot be sent",
        ),
        (
            {"role": "assistant", "content": [{"type": "image", "image": PNG_BASE64}]},
            "messages.0.content.0: the assistant message cannot carry 'image' parts",
        ),
        (
            {"role": "tool", "content": [{"type": "text", "text": "x"}]},
            "messages.0.content.0: a tool message takes tool-result parts, not 'text'",
        ),
        (
            _tool_result({"type": "html", "value": "<b>"})[0],
            "messages.0.content.0.output: `output` must be {type: text|json|error-text",
        ),
        (
            _tool_result({"type": "text", "value": 3})[0],
            "messages.0.content.0.output: a text output's `value` must be a string",
        ),
        (
            _tool_result({"type": "json"})[0],
            "messages.0.content.0.output: `output` needs a `value`",
        ),
        (
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool-call",
                        "toolCallId": "ws1",
                        "toolName": "web_search",
                        "input": {},
                        "providerExecuted": True,
                    }
                ],
            },
            "messages.0.content.0: tool call ws1 was executed by the provider and cannot be sent",
        ),
        (
            {"role": "assistant", "content": [{"type": "tool-call", "toolName": "w", "input": {}}]},
            "messages.0.content.0: `toolCallId` must be a string",
        ),
    ],
)
def test_parts_that_cannot_be_converted_name_message_and_part(
    message: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai([message])
    assert error in caught.value.message
