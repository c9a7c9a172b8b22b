"""OpenAI's and Azure's routes when the server demands their keys; Azure's own chunk shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator import Simulator, SimulatorConfig, answer_text

OPENAI_KEY = "sk-simulator-openai-0123456789"
AZURE_KEY = "simulator-azure-0123456789"
MESSAGES = [{"role": "user", "content": "Hello Azure"}]
AZURE_PATH = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        tokens=5, tokens_per_s=0, ttft_s=0, openai_key=OPENAI_KEY, azure_key=AZURE_KEY
    )
    async with Simulator(config) as simulator:
        yield simulator


async def post(
    sim: Simulator, path: str, headers: dict[str, str], **body: Any
) -> tuple[int, bytes]:
    payload = {"messages": MESSAGES, "stream": True, **body}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + path, json=payload, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


def chunks(raw: bytes) -> list[dict[str, Any]]:
    events = raw.decode().removesuffix("\n\n").split("\n\n")
    assert events[-1] == "data: [DONE]"
    return [json.loads(event.removeprefix("data: ")) for event in events[:-1]]


async def test_openai_reports_the_snapshot_behind_an_alias(sim: Simulator) -> None:
    auth = {"Authorization": f"Bearer {OPENAI_KEY}"}
    status, raw = await post(sim, "/v1/chat/completions", auth, model="gpt-4o-mini")
    assert status == 200
    assert {chunk["model"] for chunk in chunks(raw)} == {"gpt-4o-mini-2024-07-18"}


async def test_openai_refuses_another_key_and_names_it_as_openai_does(sim: Simulator) -> None:
    auth = {"Authorization": "Bearer sk-wrong"}
    status, raw = await post(sim, "/v1/chat/completions", auth, model="gpt-4o-mini")
    assert status == 401
    error = json.loads(raw)["error"]
    assert error["code"] == "invalid_api_key"
    assert "sk-wrong" in error["message"]
    (received,) = sim.requests(provider="openai")
    assert received.outcome == "error:401"


async def test_azure_streams_with_prompt_and_content_filter_verdicts(sim: Simulator) -> None:
    status, raw = await post(sim, AZURE_PATH, {"api-key": AZURE_KEY})
    assert status == 200
    first, *rest = chunks(raw)
    assert first["choices"] == []
    assert first["prompt_filter_results"][0]["content_filter_results"] == {}
    assert all(chunk["model"] == "gpt-4o-2024-08-06" for chunk in rest)
    assert all(chunk["choices"][0]["content_filter_results"] == {} for chunk in rest)
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in rest)
    assert text == answer_text(MESSAGES, 5)
    (received,) = sim.requests(provider="azure")
    assert (received.path, received.query) == (
        AZURE_PATH.split("?", maxsplit=1)[0],
        {"api-version": "2024-10-21"},
    )


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (AZURE_PATH, {"api-key": "wrong"}, 401),
        (AZURE_PATH, {"Authorization": f"Bearer {AZURE_KEY}"}, 401),
        (AZURE_PATH.split("?", maxsplit=1)[0], {"api-key": AZURE_KEY}, 404),
    ],
)
async def test_azure_refuses_a_wrong_key_or_a_missing_api_version(
    sim: Simulator, path: str, headers: dict[str, str], status: int
) -> None:
    assert (await post(sim, path, headers))[0] == status
