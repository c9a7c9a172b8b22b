"""Options a provider does not take are dropped with a warning, never a failed job; and the
completer applies that and the media policy to every stream it opens."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from litellm.types.llms import openai as litellm_openai  # noqa: TID251 (the values mirrored)

from worker.errors import InvalidRequest, JobError
from worker.jobs import ReasoningEffort, parse_request
from worker.llm.catalog import ModelCatalog
from worker.llm.completer import Completer
from worker.llm.options import keep_supported
from worker.llm.target import Target

TOOLS = [{"type": "function", "function": {"name": "weather"}}]


def test_the_reasoning_efforts_accepted_are_litellms() -> None:
    assert typing.get_args(ReasoningEffort) == typing.get_args(litellm_openai.REASONING_EFFORT)


@pytest.mark.parametrize(
    ("deployment", "options", "dropped"),
    [
        ("openai/gpt-4o-mini", {"tools": TOOLS, "temperature": 0.1}, ()),
        (
            "openai/gpt-4o-mini",
            {"reasoning_effort": "low", "thinking": {}},
            ("reasoning_effort", "thinking"),
        ),
        ("openai/o3-mini", {"reasoning_effort": "low", "temperature": 0.1}, ()),
        ("gemini/gemini-2.5-flash", {"reasoning_effort": "high", "user": "u1"}, ("user",)),
        ("bedrock/us.anthropic.claude-sonnet-4-6", {"thinking": {}, "seed": 1}, ("seed",)),
        ("bedrock/amazon.titan-text-express-v1", {"tools": TOOLS}, ("tools",)),
        ("gemini/gemini-2.5-flash", {"top_k": 5}, ()),  # provider-specific: LiteLLM passes it on
        ("nope/unknown", {"tools": TOOLS}, ()),  # LiteLLM cannot tell: the provider decides
    ],
)
def test_options_the_provider_does_not_take_are_dropped(
    deployment: str, options: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    kept, names = keep_supported(options, [deployment])
    assert names == dropped
    assert kept == {name: value for name, value in options.items() if name not in dropped}


def test_an_option_one_deployment_lacks_is_dropped_for_all() -> None:
    _, names = keep_supported(
        {"tools": TOOLS}, ["openai/gpt-4o-mini", "bedrock/amazon.titan-text-express-v1"]
    )
    assert names == ("tools",)


@pytest.fixture
async def trap() -> AsyncIterator[list[bytes]]:
    """A local HTTP server that must see no request: it records the first bytes of each."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    seen.append(str(server.sockets[0].getsockname()[1]).encode())  # the port, first
    async with server:
        yield seen


@pytest.fixture
async def completer(tmp_path: Path, trap: list[bytes]) -> AsyncIterator[Completer]:
    port = trap[0].decode()
    models = tmp_path / "models.yaml"
    models.write_text(
        "model_list:\n"
        "  - model_name: mini\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-test,"
        f" api_base: 'http://127.0.0.1:{port}/v1'}}\n"
        "  - model_name: flash\n"
        "    litellm_params: {model: gemini/gemini-2.5-flash, api_key: test,"
        f" api_base: 'http://127.0.0.1:{port}'}}\n",
        encoding="utf-8",
    )
    completer = Completer(
        ModelCatalog.load(models), allow_unlisted=False, media_url_hosts=["127.0.0.1"]
    )
    yield completer
    await completer.aclose()


def _request(**options: Any) -> Any:
    return parse_request(
        {
            "model": "mini",
            "messages": [
                {
                    "role": "user",
                    "parts": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "file",
                            "mediaType": "image/png",
                            "url": "https://cdn.example.com/a.png",
                        },
                    ],
                }
            ],
            "options": options,
        }
    )


async def test_dropped_options_are_logged_once_per_job(completer: Completer) -> None:
    request = _request(reasoning_effort="high", temperature=0.2)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):  # retries and restarts of one job
            stream = completer.stream(Target("mini", routed=True), request)
            await stream.aclose()  # type: ignore[attr-defined]
    assert [entry for entry in logs if entry["event"] == "options_dropped"] == [
        {"event": "options_dropped", "options": ["reasoning_effort"], "log_level": "warning"}
    ]


async def test_the_trap_sees_a_request_that_is_let_through(
    completer: Completer, trap: list[bytes]
) -> None:
    """The control: an image URL goes to OpenAI as given (the trap plays OpenAI here)."""
    stream = completer.stream(Target("mini", routed=True), _request())
    with pytest.raises(JobError):
        async for _ in stream:
            pass
    assert len(trap) == 2
    assert trap[1].startswith(b"POST /v1/chat/completions")
    assert b"https://cdn.example.com/a.png" in trap[1]


def test_a_media_url_goes_as_given_to_openai_and_is_refused_for_gemini(
    completer: Completer,
) -> None:
    request = _request()
    completer.stream(Target("mini", routed=True), request)
    with pytest.raises(InvalidRequest) as caught:
        completer.stream(Target("flash", routed=True), request)
    assert caught.value.message.startswith(
        "invalid request_data: messages.0.parts.1: the worker does not fetch media URLs for this"
        " model (image on host cdn.example.com"
    )


async def test_a_listed_host_with_a_loopback_address_fails_the_stream_before_any_request(
    completer: Completer, trap: list[bytes]
) -> None:
    """Neither the image on the trap nor the provider (the trap too) sees a request."""
    port = trap[0].decode()
    request = parse_request(
        {
            "model": "flash",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": f"http://127.0.0.1:{port}/a.png"},
                    ],
                }
            ],
        }
    )
    stream = completer.stream(Target("flash", routed=True), request)
    with pytest.raises(InvalidRequest, match="non-public address"):
        await anext(stream)
    await asyncio.sleep(0.05)
    assert trap[1:] == []


async def test_an_unlisted_host_fails_before_any_request(
    completer: Completer, trap: list[bytes]
) -> None:
    port = trap[0].decode()
    request = parse_request(
        {
            "model": "flash",
            "messages": [
                {
                    "role": "user",
                    "parts": [
                        {
                            "type": "file",
                            "mediaType": "application/pdf",
                            "url": f"http://localhost:{port}/a.pdf",
                        }
                    ],
                }
            ],
        }
    )
    with pytest.raises(InvalidRequest, match="on host localhost, not in WORKER_MEDIA_URL_HOSTS"):
        completer.stream(Target("flash", routed=True), request)
    await asyncio.sleep(0.05)
    assert trap[1:] == []
