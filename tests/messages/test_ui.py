"""AI SDK UI messages become OpenAI messages as the SDK's own conversion would (contract 8)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests.aisdk import ALIASES, run_sdk
from tests.messages.cases import CASES, PNG, Case
from worker.errors import InvalidRequest
from worker.messages import to_openai

_PAIRS = [(case, alias) for case in CASES for alias in case.aliases]


@functools.cache
def _sdk_answers() -> dict[str, dict[str, Any]]:
    """For each case: {"valid": {alias: answer}, "model": {alias: answer}}, in one node run."""
    requests = []
    for case in CASES:
        requests += [
            {"op": "validate-ui", "messages": case.ui},
            {"op": "convert", "messages": case.ui},
        ]
    answers, _ = run_sdk(requests)
    return {
        case.name: {"valid": answers[2 * index], "model": answers[2 * index + 1]}
        for index, case in enumerate(CASES)
    }


def _ids(pair: tuple[Case, str]) -> str:
    return f"{pair[0].name}-{pair[1]}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_ui_parts_become_openai_messages(case: Case) -> None:
    assert to_openai(case.ui) == case.openai


@pytest.mark.parametrize("pair", _PAIRS, ids=_ids)
def test_the_sdk_takes_each_ui_message_as_valid(pair: tuple[Case, str]) -> None:
    case, alias = pair
    answer = _sdk_answers()[case.name]["valid"][alias]
    assert answer["ok"], answer.get("error")


@pytest.mark.parametrize("pair", _PAIRS, ids=_ids)
def test_the_sdks_model_messages_become_the_same_openai_messages(pair: tuple[Case, str]) -> None:
    """convertToModelMessages(ui), converted by the worker, equals the worker's own
    conversion of the UI messages: one mapping, whichever form the app sends."""
    case, alias = pair
    answer = _sdk_answers()[case.name]["model"][alias]
    assert answer["ok"], answer.get("error")
    assert _text_lists_joined(to_openai(answer["messages"])) == case.openai


def _text_lists_joined(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A model message whose content is text parts only reads as an OpenAI message and is
    passed on as given; the UI conversion writes the same text as one string."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and all(part["type"] == "text" for part in content):
            out.append({**message, "content": "".join(part["text"] for part in content)})
        else:
            out.append(message)
    return out


def test_every_accepted_sdk_major_is_tested() -> None:
    _, versions = run_sdk([])
    assert {alias: version.split(".")[0] for alias, version in versions.items()} == {
        alias: alias.removeprefix("ai") for alias in ALIASES
    }


def test_v4_attachments_become_content_parts() -> None:
    attachments = [
        {"name": "dot.png", "contentType": "image/png", "url": PNG},
        {"name": "a.pdf", "contentType": "application/pdf", "url": "https://example.com/a.pdf"},
    ]
    with_parts = {
        "role": "user",
        "content": "What are these?",
        "parts": [{"type": "text", "text": "What are these?"}],
        "experimental_attachments": attachments,
    }
    without_parts = {
        "role": "user",
        "content": "What are these?",
        "experimental_attachments": attachments,
    }
    expected = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {
                    "type": "file",
                    "file": {
                        "file_id": "https://example.com/a.pdf",
                        "format": "application/pdf",
                        "filename": "a.pdf",
                    },
                },
            ],
        }
    ]
    assert to_openai([with_parts]) == expected
    assert to_openai([without_parts]) == expected


def test_reasoning_outside_assistant_messages_is_dropped_as_the_sdk_does() -> None:
    message = {
        "role": "user",
        "parts": [{"type": "reasoning", "text": "x"}, {"type": "text", "text": "y"}],
    }
    assert to_openai([message]) == [{"role": "user", "content": "y"}]


def test_a_call_still_streaming_its_input_is_dropped_as_the_sdk_does() -> None:
    parts = [
        {"type": "text", "text": "Hm."},
        {"type": "tool-weather", "toolCallId": "c1", "state": "input-streaming", "input": {}},
    ]
    assert to_openai([{"role": "assistant", "parts": parts}]) == [
        {"role": "assistant", "content": "Hm."}
    ]


def test_a_message_of_only_dropped_parts_disappears() -> None:
    messages = [
        {"role": "user", "parts": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "parts": [{"type": "step-start"}, {"type": "data-x", "data": 1}]},
    ]
    assert to_openai(messages) == [{"role": "user", "content": "hi"}]


def _tool_part(state: str) -> dict[str, Any]:
    return {"type": "tool-weather", "toolCallId": "c1", "state": state, "input": {"city": "Paris"}}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {
                "role": "assistant",
                "parts": [{"type": "text", "text": "a"}, _tool_part("input-available")],
            },
            "messages.1.parts.1: tool call c1 has no output yet (state 'input-available')",
        ),
        (
            {"role": "assistant", "parts": [_tool_part("approval-requested")]},
            "messages.1.parts.0: tool call c1 has no output yet (state 'approval-requested')",
        ),
        (
            {"role": "assistant", "parts": [_tool_part("approval-responded")]},
            "messages.1.parts.0: tool call c1 has no output yet",
        ),
        ({"role": "assistant", "parts": [_tool_part("later")]}, "unknown tool state 'later'"),
        (
            {
                "role": "assistant",
                "parts": [
                    {**_tool_part("output-available"), "providerExecuted": True, "output": 1}
                ],
            },
            "messages.1.parts.0: tool call c1 was executed by the provider and cannot be sent",
        ),
        (
            {"role": "assistant", "parts": [{"type": "tool-w", "state": "output-available"}]},
            "messages.1.parts.0: `toolCallId` must be a string",
        ),
        (
            {"role": "assistant", "parts": [{"type": "dynamic-tool", "toolCallId": "c"}]},
            "messages.1.parts.0: `toolName` must be a string",
        ),
        (
            {
                "role": "assistant",
                "parts": [{"type": "file", "mediaType": "image/png", "url": PNG}],
            },
            "messages.1.parts.0: the assistant message cannot carry 'file' parts",
        ),
        (
            {"role": "user", "parts": [_tool_part("output-available")]},
            "messages.1.parts.0: the user message cannot carry 'tool-weather' parts",
        ),
        (
            {"role": "system", "parts": [{"type": "file", "mediaType": "image/png", "url": PNG}]},
            "messages.1.parts.0: the system message cannot carry 'file' parts",
        ),
        (
            {"role": "user", "parts": [{"type": "file", "mediaType": "image/png"}]},
            "messages.1.parts.0: a file part needs a `url`",
        ),
        (
            {"role": "user", "parts": [{"type": "file", "url": "https://example.com/x"}]},
            "messages.1.parts.0: a file needs a `mediaType`",
        ),
        (
            {
                "role": "user",
                "parts": [{"type": "file", "mediaType": "image/png", "url": "s3://b/k"}],
            },
            "messages.1.parts.0: `url` must be an https: or data: URL, not s3:",
        ),
        ({"role": "user", "parts": [{"type": "video"}]}, "cannot carry 'video' parts"),
        ({"role": "tool", "parts": []}, "messages.1.role: an AI SDK UI message's role is one of"),
        ({"role": "user", "parts": "hi"}, "messages.1: `parts` must be a list"),
        (
            {"role": "user", "parts": [], "experimental_attachments": [{"contentType": "x"}]},
            "messages.1.experimental_attachments.0: an attachment needs a `url`",
        ),
    ],
)
def test_parts_that_cannot_be_converted_name_message_and_part(
    message: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai([{"role": "user", "content": "first"}, message])
    assert error in caught.value.message
