"""Bedrock's route: ConverseStream in AWS event-stream framing, credential scope checked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from botocore.eventstream import EventStreamBuffer

from simulator import Simulator, SimulatorConfig, answer_text
from simulator.bedrock import credential_scope, event_message

KEY_ID = "AKIASIMULATOR0000000"
REGION = "eu-west-3"
PROMPT = "Hello Bedrock"
SIGNATURE = "0" * 64


def authorization(key_id: str = KEY_ID, region: str = REGION) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={key_id}/20261201/{region}/bedrock/aws4_request, "
        f"SignedHeaders=content-type;host;x-amz-date, Signature={SIGNATURE}"
    )


def converse(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "system": [{"text": "Be brief."}],
        **extra,
    }


def expected(prompt: str, tokens: int) -> str:
    return answer_text(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}], tokens
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        tokens=8, tokens_per_s=0, ttft_s=0, bedrock_key_id=KEY_ID, bedrock_region=REGION
    )
    async with Simulator(config) as simulator:
        yield simulator


async def post(
    sim: Simulator, body: dict[str, Any], auth: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    url = f"{sim.url}/model/us.anthropic.claude-sonnet-4-6/converse-stream"
    headers = {"Authorization": auth or authorization()}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def decode(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]


def test_the_bedrock_simulator_frames_events_as_aws_does() -> None:
    """botocore's own event-stream decoder reads the framing (prelude, CRCs, headers)."""
    buffer = EventStreamBuffer()
    buffer.add_data(event_message("messageStart", {"role": "assistant"}))
    buffer.add_data(event_message("contentBlockDelta", {"delta": {"text": "日本語🚀"}}))
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages] == ["messageStart", "contentBlockDelta"]
    assert {m.headers[":message-type"] for m in messages} == {"event"}
    assert json.loads(messages[1].payload)["delta"]["text"] == "日本語🚀"


async def test_converse_stream_answers_with_deltas_stop_and_usage(sim: Simulator) -> None:
    status, headers, raw = await post(sim, converse(PROMPT, inferenceConfig={"maxTokens": 5}))
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    events = decode(raw)
    kinds = [kind for kind, _ in events]
    assert kinds == ["messageStart", *["contentBlockDelta"] * 5, "contentBlockStop",
                     "messageStop", "metadata"]  # fmt: skip
    text = "".join(p["delta"]["text"] for kind, p in events if kind == "contentBlockDelta")
    assert text == expected(PROMPT, 5)
    assert events[-2][1]["stopReason"] == "max_tokens"
    assert events[-1][1]["usage"] == {"inputTokens": 4, "outputTokens": 5, "totalTokens": 9}
    (received,) = sim.requests(provider="bedrock")
    assert received.prompt == PROMPT
    assert credential_scope(received.header("authorization")) == {
        "key_id": KEY_ID,
        "date": "20261201",
        "region": REGION,
    }


@pytest.mark.parametrize(
    ("auth", "kind"),
    [
        (authorization(key_id="AKIAWRONG00000000000"), "UnrecognizedClientException"),
        (authorization(region="us-east-1"), "InvalidSignatureException"),
        ("Bearer not-sigv4", "UnrecognizedClientException"),
    ],
)
async def test_credentials_other_than_the_configured_ones_are_refused(
    sim: Simulator, auth: str, kind: str
) -> None:
    status, headers, _ = await post(sim, converse(PROMPT), auth)
    assert status == 403
    assert headers["x-amzn-ErrorType"].startswith(f"{kind}:")


async def test_directives_script_bedrock_errors_and_breaks(sim: Simulator) -> None:
    status, headers, raw = await post(sim, converse("Busy [[sim status=429 retry_after=0.5]]"))
    assert (status, headers["Retry-After"]) == (429, "0.5")
    assert headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
    assert json.loads(raw) == {"message": "simulated 429"}
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(sim, converse("Cut [[sim drop_after=2]]"))
    assert sim.requests(provider="bedrock")[-1].outcome == "dropped"
