"""The simulator's server, through its OpenAI route: answers, directives, request log, CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator import Simulator, SimulatorConfig, answer_text, answer_tokens

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 10.0


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    async with Simulator(SimulatorConfig(tokens=12, tokens_per_s=0, ttft_s=0)) as sim:
        yield sim.url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _messages(text: str) -> list[dict[str, object]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def _body(messages: list[dict[str, object]], **extra: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": messages, "stream": True, **extra}


def _events(raw: bytes) -> list[str]:
    text = raw.decode()
    assert text.endswith("\n\n")
    events = text.removesuffix("\n\n").split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def _log(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/_sim/requests") as resp:
        result: list[dict[str, Any]] = await resp.json()
        return result


async def _wait_for_log(
    session: aiohttp.ClientSession, url: str, check: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        log = await _log(session, url)
        if check(log):
            return log
        assert loop.time() < deadline, f"request log never matched: {log}"
        await asyncio.sleep(0.02)


async def _stream_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Yield parsed content chunks until [DONE]."""
    async for line in resp.content:
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            yield json.loads(line[6:])


async def _collect(lines: AsyncIterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    async for chunk in lines:
        into.append(chunk)


def test_answer_is_deterministic_varied_and_multibyte() -> None:
    messages = _messages("hello")
    tokens = answer_tokens(messages, 200)
    assert tokens == answer_tokens(messages, 200)
    assert answer_text(messages, 200) == "".join(tokens)
    assert answer_tokens(messages, 10) == tokens[:10]
    assert answer_tokens(_messages("hello!"), 200) != tokens
    assert all(a != b for a, b in itertools.pairwise(tokens))
    assert any(len(t.encode()) != len(t) for t in tokens)
    assert sum(t.startswith(" ") for t in tokens) > len(tokens) // 2
    assert answer_tokens(messages, 0) == []


async def test_stream_matches_answer_with_usage(
    sim_url: str, session: aiohttp.ClientSession
) -> None:
    messages = _messages("tell me a story [[sim tokens=30]]")
    expected = answer_text(messages, 30)
    assert expected.encode() != expected.encode("ascii", "ignore")
    body = _body(messages, stream_options={"include_usage": True})
    async with session.post(f"{sim_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = _events(await resp.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "sim-model" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert _content(chunks) == expected
    assert len(chunks) == 1 + 30 + 1 + 1
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 30, "total_tokens": 38}


async def test_stream_without_usage_and_cut_by_max_tokens(
    sim_url: str, session: aiohttp.ClientSession
) -> None:
    messages = _messages("short please")
    body = _body(messages, max_tokens=5)
    async with session.post(f"{sim_url}/chat/completions", json=body) as resp:
        chunks = [json.loads(e) for e in _events(await resp.read())[:-1]]
    assert all("usage" not in c for c in chunks)
    assert _content(chunks) == answer_text(messages, 5)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_split_writes_break_characters_across_reads(
    sim_url: str, session: aiohttp.ClientSession
) -> None:
    parts = [{"type": "text", "text": "[[sim split=1 tokens=20]]"}]
    messages: list[dict[str, object]] = [{"role": "user", "content": parts}]
    expected = answer_text(messages, 20)
    assert any(ord(ch) > 127 for ch in expected)
    reads: list[bytes] = []
    async with session.post(f"{sim_url}/v1/chat/completions", json=_body(messages)) as resp:
        async for data in resp.content.iter_any():
            reads.append(data)
    raw = b"".join(reads)
    assert _content([json.loads(e) for e in _events(raw)[:-1]]) == expected
    torn = 0
    for data in reads:
        try:
            data.decode()
        except UnicodeDecodeError:
            torn += 1
    assert torn > 0, "no read ended inside a multi-byte character"


async def test_non_streaming_completion(sim_url: str, session: aiohttp.ClientSession) -> None:
    messages = _messages("no stream [[sim tokens=7]]")
    body = {"model": "m1", "messages": messages, "max_completion_tokens": 50}
    async with session.post(f"{sim_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m1"
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": answer_text(messages, 7),
    }
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 7


async def test_rate_limit_twice_then_success(sim_url: str, session: aiohttp.ClientSession) -> None:
    body = _body(_messages("busy [[sim status=429 times=2 retry_after=2.5]]"))
    for _ in range(2):
        async with session.post(f"{sim_url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2.5"
            assert (await resp.json())["error"]["type"] == "rate_limit_error"
    async with session.post(f"{sim_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert _events(await resp.read())[-1] == "[DONE]"
    outcomes = [r["outcome"] for r in await _log(session, sim_url)]
    assert outcomes == ["error:429", "error:429", "completed"]


@pytest.mark.parametrize(
    ("directive", "status", "error"),
    [
        (
            "status=401",
            401,
            {"message": "simulated 401", "type": "authentication_error", "code": "invalid_api_key"},
        ),
        (
            "status=400 code=context_length_exceeded",
            400,
            {
                "message": "simulated 400",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
        ),
        ("status=503", 503, {"message": "simulated 503", "type": "server_error", "code": None}),
        ("bogus=1", 400, None),
    ],
)
async def test_error_responses_use_openai_shape(
    sim_url: str,
    session: aiohttp.ClientSession,
    directive: str,
    status: int,
    error: dict[str, Any] | None,
) -> None:
    body = _body(_messages(f"x [[sim {directive}]]"))
    async with session.post(f"{sim_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == status
        data = await resp.json()
    assert set(data["error"]) == {"message", "type", "code"}
    if error is not None:
        assert data == {"error": error}


async def test_invalid_json_is_rejected(sim_url: str, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{sim_url}/v1/chat/completions", data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_drop_after_aborts_without_done(sim_url: str, session: aiohttp.ClientSession) -> None:
    messages = _messages("[[sim drop_after=4 tokens=10]]")
    chunks: list[dict[str, Any]] = []
    async with session.post(f"{sim_url}/v1/chat/completions", json=_body(messages)) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await _collect(_stream_lines(resp), chunks)
    assert _content(chunks) == answer_text(messages, 4)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    log = await _log(session, sim_url)
    assert log[-1]["outcome"] == "dropped"
    assert log[-1]["chunks_sent"] == 4


async def test_stall_after_goes_silent_then_records_disconnect(
    sim_url: str, session: aiohttp.ClientSession
) -> None:
    messages = _messages("[[sim stall_after=3 tokens=10]]")
    chunks: list[dict[str, Any]] = []
    async with session.post(f"{sim_url}/v1/chat/completions", json=_body(messages)) as resp:
        lines = _stream_lines(resp)
        for _ in range(4):
            chunks.append(await anext(lines))
        assert (await _log(session, sim_url))[-1]["outcome"] == "stalled"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await anext(lines)
        resp.close()
    assert _content(chunks) == answer_text(messages, 3)
    log = await _wait_for_log(
        session, sim_url, lambda log: log[-1]["outcome"] == "client_disconnected"
    )
    assert log[-1]["chunks_sent"] == 3


async def test_client_disconnect_is_recorded(sim_url: str, session: aiohttp.ClientSession) -> None:
    messages = _messages("[[sim tps=20 tokens=200]]")
    async with session.post(f"{sim_url}/v1/chat/completions", json=_body(messages)) as resp:
        lines = _stream_lines(resp)
        for _ in range(3):
            await anext(lines)
        resp.close()
    log = await _wait_for_log(
        session, sim_url, lambda log: log[-1]["outcome"] == "client_disconnected"
    )
    assert 2 <= log[-1]["chunks_sent"] < 200


async def test_request_log_records_and_resets(sim_url: str, session: aiohttp.ClientSession) -> None:
    messages = _messages("log me [[sim status=500 times=1]]")
    body = _body(messages)
    headers = {"Authorization": "Bearer sk-test", "X-Job-Id": "job-7"}
    for expected_status in (500, 200):
        async with session.post(f"{sim_url}/chat/completions", json=body, headers=headers) as resp:
            assert resp.status == expected_status
            await resp.read()
    log = await _log(session, sim_url)
    assert [r["outcome"] for r in log] == ["error:500", "completed"]
    first = log[0]
    assert first["path"] == "/chat/completions"
    assert first["model"] == "sim-model"
    assert first["body"] == body
    assert first["headers"]["X-Job-Id"] == "job-7"
    assert first["fingerprint"] == log[1]["fingerprint"]
    assert len(first["fingerprint"]) == 16
    assert log[1]["chunks_sent"] == 12
    async with session.delete(f"{sim_url}/_sim/requests") as resp:
        assert resp.status == 200
    assert await _log(session, sim_url) == []
    # Reset also clears the fault counters, so the fault fires again.
    async with session.post(f"{sim_url}/chat/completions", json=body) as resp:
        assert resp.status == 500


async def test_healthz(sim_url: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{sim_url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_litellm_streams_through_real_http_path(
    sim_url: str, session: aiohttp.ClientSession
) -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm  # noqa: TID251 - the one LiteLLM round trip

    messages = _messages("through litellm [[sim tokens=25]]")
    stream = await litellm.acompletion(
        model="openai/sim-model",
        api_base=f"{sim_url}/v1",
        api_key="sk-test",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
    )
    parts: list[str] = []
    usage: Any = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = getattr(chunk, "usage", None) or usage
    received = (await _log(session, sim_url))[-1]["body"]["messages"]
    assert "".join(parts) == answer_text(received, 25) == answer_text(messages, 25)
    assert usage.completion_tokens == 25


async def _read_listening_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(DEADLINE_S):
        line = (await proc.stdout.readline()).decode().strip()
    prefix = "simulator listening on "
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


@pytest.mark.parametrize("processes", [1, 2])
async def test_main_runs_as_subprocess_until_sigterm(
    session: aiohttp.ClientSession, processes: int
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--tokens",
        "3",
        "--processes",
        str(processes),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = await _read_listening_line(proc)
        messages = _messages("subprocess")
        for _ in range(4):
            async with session.post(f"{url}/v1/chat/completions", json=_body(messages)) as resp:
                chunks = [json.loads(e) for e in _events(await resp.read())[:-1]]
            assert _content(chunks) == answer_text(messages, 3)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
