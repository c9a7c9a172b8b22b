"""The directive language and the answers: one of each, whichever provider's route is asked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from botocore.eventstream import EventStreamBuffer

from simulator import Simulator, SimulatorConfig, answer_text, answer_tokens, count_prompt_tokens
from simulator.answers import Message, openai_conversation
from simulator.script import Directive, DirectiveError, parse_directive


def test_directives_merge_and_type_their_values() -> None:
    directive = parse_directive("x [[sim tokens=5 tps=2.5]] y [[sim status=429 only=gemini]]")
    assert directive == Directive(tokens=5, tps=2.5, status=429, only="gemini")
    assert directive.is_fault
    assert directive.applies_to("gemini")
    assert not directive.applies_to("openai")
    assert directive.without_faults() == Directive(tokens=5, tps=2.5, only="gemini")
    assert parse_directive("no directive here") == Directive()


@pytest.mark.parametrize(
    "text",
    ["[[sim bogus=1]]", "[[sim tokens=many]]", "[[sim status=200]]", "[[sim only=cohere]]"],
)
def test_a_bad_directive_is_refused(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directive(text)


def test_an_ending_replaces_the_last_token_only() -> None:
    messages = [{"role": "user", "content": "end well"}]
    plain, ended = answer_tokens(messages, 6), answer_tokens(messages, 6, ending=" 日本語🚀")
    assert ended == [*plain[:-1], " 日本語🚀"]
    assert answer_text(messages, 6, ending="!") == "".join(plain[:-1]) + "!"


def test_openai_messages_and_conversations_get_the_same_answer() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"text": "there"}]}]
    conversation = openai_conversation(parts)
    assert conversation == (Message("user", "hi there"),)
    assert answer_text(parts, 9) == answer_text(conversation, 9)
    assert answer_text([{"role": "user", "content": "hi there"}], 9) == answer_text(parts, 9)
    assert count_prompt_tokens(parts) == 2


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=4, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


ROUTES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "openai": ("/v1/chat/completions", lambda p: {"messages": [{"role": "user", "content": p}]}),
    "azure": (
        "/openai/deployments/d/chat/completions?api-version=1",
        lambda p: {"messages": [{"role": "user", "content": p}]},
    ),
    "gemini": (
        "/models/m:streamGenerateContent?alt=sse",
        lambda p: {"contents": [{"role": "user", "parts": [{"text": p}]}]},
    ),
    "bedrock": (
        "/model/m/converse-stream",
        lambda p: {"messages": [{"role": "user", "content": [{"text": p}]}]},
    ),
}


async def ask(sim: Simulator, provider: str, prompt: str) -> tuple[int, bytes]:
    path, body = ROUTES[provider]
    payload: dict[str, Any] = {**body(prompt), "stream": True}
    async with aiohttp.ClientSession() as session, session.post(sim.url + path, json=payload) as r:
        return r.status, await r.read()


async def status_of(sim: Simulator, provider: str, prompt: str) -> int:
    return (await ask(sim, provider, prompt))[0]


def text_of(provider: str, raw: bytes) -> str:
    """The answer text in one provider's stream."""
    if provider == "bedrock":
        buffer = EventStreamBuffer()
        buffer.add_data(raw)
        payloads = [json.loads(m.payload) for m in buffer]
        return "".join(p["delta"]["text"] for p in payloads if "delta" in p)
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.startswith(b"data: {")]
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events]
    if provider == "gemini":
        return "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def test_only_limits_a_fault_to_one_providers_route(sim: Simulator) -> None:
    prompt = "Fallback [[sim status=503 only=openai]]"
    statuses = {provider: await status_of(sim, provider, prompt) for provider in ROUTES}
    assert statuses == {"openai": 503, "azure": 200, "gemini": 200, "bedrock": 200}


async def test_times_counts_one_conversations_requests_across_routes(sim: Simulator) -> None:
    prompt = "Twice [[sim status=500 times=2]]"
    statuses = [await status_of(sim, provider, prompt) for provider in ("gemini", "bedrock")]
    statuses += [await status_of(sim, "openai", prompt), await status_of(sim, "openai", "other")]
    assert statuses == [500, 500, 200, 200]


async def test_every_route_answers_a_prompt_with_the_same_text(sim: Simulator) -> None:
    prompt = "Same everywhere"
    expected = answer_text([{"role": "user", "content": prompt}], 4)
    for provider in ROUTES:
        status, raw = await ask(sim, provider, prompt)
        assert (status, text_of(provider, raw)) == (200, expected), provider
    assert [r.provider for r in sim.requests(prompt=prompt)] == list(ROUTES)
