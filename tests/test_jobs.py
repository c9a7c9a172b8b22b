"""Parsing `request_data` (contract section 2) and message bodies (section 5): pure functions."""

from __future__ import annotations

import uuid

import pytest

from worker.errors import InvalidRequest
from worker.jobs import parse_request
from worker.queue import parse_body

JOB_ID = uuid.uuid4()
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
