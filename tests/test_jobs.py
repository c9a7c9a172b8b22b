"""Parsing `request_data` (contract section 2) and message bodies (section 5): pure functions."""

from __future__ import annotations

import uuid

import pytest

from worker.errors import InvalidRequest
from worker.jobs import parse_request
from worker.queue import parse_body

# Fixed, not random: every pytest-xdist process must collect the same test ids.
JOB_ID = uuid.UUID("3c1db9c8-be6a-4984-950e-6bf4a69c5f79")
IMAGE = "data:image/png;base64,AA"


@pytest.mark.parametrize(
    "body",
    [
        f'{{"jobId": "{JOB_ID}"}}',
        f'{{"jobId": "{JOB_ID}", "other": 1}}',
        str(JOB_ID),
        f' "{JOB_ID}" ',
        f"{JOB_ID}\n",
    ],
)
def test_bodies_that_name_a_job(body: str) -> None:
    assert parse_body(body) == (JOB_ID, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json {", "body is neither JSON nor a job id"),
        ("", "body is neither JSON nor a job id"),
        ('{"job": "x"}', "body has no jobId"),
        ('{"jobId": 42}', "jobId is not a string"),
        ('{"jobId": "nope"}', "jobId is not a uuid"),
        ("[1, 2]", "jobId is not a string"),
    ],
)
def test_bodies_that_never_can(body: str, reason: str) -> None:
    assert parse_body(body) == (None, reason)


def test_a_request_in_the_current_format() -> None:
    request = parse_request(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            ],
            "options": {"temperature": 0.2, "max_tokens": 512, "api_key": "sk-x", "nonsense": 1},
        }
    )
    assert request.model == "gpt-4o-mini"
    assert request.fallback_model is None
    assert request.options == {"temperature": 0.2, "max_tokens": 512}
    assert request.ignored_options == ("api_key", "nonsense")
    assert request.messages[1] == {"role": "user", "content": [{"type": "text", "text": "Hello"}]}


@pytest.mark.parametrize(
    ("provider", "prefix"),
    [("openai", "openai"), ("google", "gemini"), ("amazon-bedrock", "bedrock"), ("azure", "azure")],
)
def test_the_legacy_provider_and_model_id(provider: str, prefix: str) -> None:
    request = parse_request(
        {"provider": provider, "modelId": "m-1", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (request.model, request.fallback_model) == ("m-1", f"{prefix}/m-1")


def test_vercel_ui_parts_become_openai_content() -> None:
    request = parse_request(
        {
            "model": "m",
            "messages": [
                {
                    "id": "1",
                    "role": "user",
                    "parts": [
                        {"type": "step-start"},
                        {"type": "text", "text": "What is "},
                        {
                            "type": "file",
                            "mediaType": "image/png",
                            "url": "data:image/png;base64,AA",
                        },
                        {"type": "text", "text": "this?"},
                    ],
                },
                {"role": "assistant", "parts": [{"type": "text", "text": "A cat."}]},
            ],
        }
    )
    assert request.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is "},
                {"type": "image_url", "image_url": {"url": IMAGE}},
                {"type": "text", "text": "this?"},
            ],
        },
        {"role": "assistant", "content": "A cat."},
    ]


@pytest.mark.parametrize(
    ("request_data", "message"),
    [
        ([], "request_data must be a JSON object"),
        ({"model": "m", "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "m"}, "messages: Field required"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "a message needs `content` or `parts`"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "`model` is missing"),
        (
            {"provider": "acme", "modelId": "x", "messages": [{"role": "user", "content": "x"}]},
            "`provider` must be one of openai, google, amazon-bedrock, azure",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"top_p": 7}},
            "top_p: Input should be less than or equal to 1",
        ),
    ],
)
def test_invalid_requests_say_what_is_wrong(request_data: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(request_data)
    assert message in caught.value.message


TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "default": None}},
            "required": ["city"],
        },
        "strict": True,
    },
}


def _with_options(**options: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": options}


def test_tool_and_reasoning_options_are_generation_options() -> None:
    options = {
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
        "reasoning_effort": "xhigh",
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    request = parse_request(_with_options(**options))
    assert request.options == options  # as the job wrote them: the schema keeps its null
    assert request.ignored_options == ()


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", "max"])
def test_every_reasoning_effort_litellm_takes_is_accepted(effort: str) -> None:
    assert parse_request(_with_options(reasoning_effort=effort)).options == {
        "reasoning_effort": effort
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tools": {"weather": {}}}, "tools: Input should be a valid list"),
        (
            {"tools": [{"type": "function", "function": {}}]},
            "tools.0.function.name: Field required",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type: Input should be 'function'"),
        ({"tool_choice": "always"}, "tool_choice"),
        ({"parallel_tool_calls": "maybe"}, "parallel_tool_calls: Input should be a valid boolean"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort: Input should be 'none'"),
        ({"thinking": {"type": "enabled"}}, "`thinking` of type enabled needs `budget_tokens`"),
        ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "budget_tokens"),
    ],
)
def test_malformed_options_fail_the_job(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(_with_options(**options))
    assert message in caught.value.message


def test_model_messages_and_openai_tool_history_are_kept() -> None:
    request = parse_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                {
                    "role": "user",
                    "content": [{"type": "image", "image": "https://example.com/a.png"}],
                },
            ],
        }
    )
    assert request.messages[0]["tool_calls"][0]["id"] == "c1"
    assert request.messages[2] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
    }
