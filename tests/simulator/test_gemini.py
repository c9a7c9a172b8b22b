"""Gemini's route: `streamGenerateContent?alt=sse`, CRLF-separated events, Google's errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator import Simulator, SimulatorConfig, answer_text

KEY = "AIzaSimulatorKey-0123456789"
PROMPT = "Hello Gemini"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=6, tokens_per_s=0, ttft_s=0, gemini_key=KEY)) as s:
        yield s


def contents(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra}


async def post(
    sim: Simulator, body: dict[str, Any], *, key: str = KEY, prefix: str = ""
) -> tuple[int, dict[str, str], bytes]:
    url = f"{sim.url}{prefix}/models/gemini-3.5-flash:streamGenerateContent?alt=sse"
    headers = {"x-goog-api-key": key}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def events(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\r\n\r\n")
    parts = raw.removesuffix(b"\r\n\r\n").split(b"\r\n\r\n")
    assert all(part.startswith(b"data: ") for part in parts)
    return [json.loads(part.removeprefix(b"data: ")) for part in parts]


@pytest.mark.parametrize("prefix", ["", "/v1beta"])
async def test_stream_answers_the_prompt_with_finish_and_usage(sim: Simulator, prefix: str) -> None:
    status, _, raw = await post(sim, contents(PROMPT), prefix=prefix)
    assert status == 200
    chunks = events(raw)
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == answer_text([{"role": "user", "content": PROMPT}], 6)
    assert {c["modelVersion"] for c in chunks} == {"gemini-3.5-flash"}
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 6
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] == 2


async def test_max_output_tokens_ends_the_answer_early(sim: Simulator) -> None:
    body = contents(PROMPT, generationConfig={"maxOutputTokens": 3})
    chunks = events((await post(sim, body))[2])
    assert len(chunks) == 4
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


async def test_a_wrong_key_gets_googles_400_api_key_invalid(sim: Simulator) -> None:
    status, _, raw = await post(sim, contents(PROMPT), key="AIzaWrong")
    assert status == 400
    assert json.loads(raw)["error"]["details"][0]["reason"] == "API_KEY_INVALID"


async def test_a_429_carries_retry_after_and_retry_delay(sim: Simulator) -> None:
    status, headers, raw = await post(sim, contents("Busy [[sim status=429 retry_after=2]]"))
    assert (status, headers["Retry-After"]) == (429, "2")
    error = json.loads(raw)["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "2s"


async def test_code_names_the_error_status(sim: Simulator) -> None:
    status, _, raw = await post(sim, contents("Odd [[sim status=400 code=FAILED_PRECONDITION]]"))
    assert status == 400
    assert json.loads(raw)["error"]["status"] == "FAILED_PRECONDITION"
