"""LiteLLM itself reads the simulator's rich answers as it reads the real providers'.

Each test streams through `litellm.acompletion` pointed at the simulator (facts.md says how
each route is reached) and checks what LiteLLM's chunks carry: reasoning, thinking blocks
and signatures, assembled tool calls, finish reasons and usage details.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import litellm  # noqa: TID251 - these tests prove the fakes against LiteLLM's own parsers
import pytest

from simulator import (
    Simulator,
    SimulatorConfig,
    answer_text,
    count_prompt_tokens,
    expected_reasoning,
    expected_tool_calls,
    redacted_data,
    thought_signature,
)

litellm.suppress_debug_info = True
SYSTEM = "Be brief."
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
TOOLS = [WEATHER, CLOCK]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=6, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


def route(sim: Simulator, provider: str) -> dict[str, Any]:
    """acompletion's arguments for one of the simulator's routes."""
    if provider == "openai":
        return {"model": "openai/sim-model", "api_base": f"{sim.url}/v1", "api_key": "sk-sim"}
    if provider == "azure":
        return {"model": "azure/gpt-4o-prod", "api_base": sim.url, "api_version": "2024-10-21",
                "api_key": "azure-sim"}  # fmt: skip
    if provider == "gemini":
        return {"model": "gemini/gemini-2.5-flash", "api_base": sim.url, "api_key": "AIza-sim"}
    return {"model": "bedrock/converse/anthropic.claude-sonnet-4-5-20250929-v1:0",
            "api_base": sim.url, "aws_region_name": "us-east-1"}  # fmt: skip


def messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


async def stream(sim: Simulator, provider: str, prompt: str, **extra: Any) -> list[Any]:
    response = await litellm.acompletion(
        **route(sim, provider),
        messages=messages(prompt),
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
        **extra,
    )
    return [chunk async for chunk in response]


def joined(chunks: list[Any], name: str) -> str:
    return "".join(
        getattr(chunk.choices[0].delta, name, None) or "" for chunk in chunks if chunk.choices
    )


def finish(chunks: list[Any]) -> str | None:
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    return reasons[-1] if reasons else None


def usage(chunks: list[Any]) -> Any:
    return next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))


def thinking_blocks(chunks: list[Any]) -> list[dict[str, Any]]:
    return [
        dict(block)
        for chunk in chunks
        if chunk.choices
        for block in (getattr(chunk.choices[0].delta, "thinking_blocks", None) or [])
    ]


def assembled_calls(chunks: list[Any]) -> list[dict[str, str]]:
    """Tool calls put together from their fragments, as any client of LiteLLM does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for fragment in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = fragment.id or call["id"]
            call["name"] = fragment.function.name or call["name"]
            call["arguments"] += fragment.function.arguments or ""
    return [calls[index] for index in sorted(calls)]


def as_dicts(prompt: str, provider: str) -> list[dict[str, str]]:
    calls = expected_tool_calls(messages(prompt), TOOLS, provider=provider)
    return [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]


@pytest.mark.parametrize("style", ["reasoning_content", "reasoning"])
async def test_openai_compatible_reasoning_arrives_as_reasoning_content(
    sim: Simulator, style: str
) -> None:
    prompt = f"Think first [[sim reasoning=5 reasoning_style={style}]]"
    chunks = await stream(sim, "openai", prompt)
    assert joined(chunks, "reasoning_content") == expected_reasoning(messages(prompt), 5)
    assert joined(chunks, "content") == answer_text(messages(prompt), 6)
    assert usage(chunks).completion_tokens == 11
    assert usage(chunks).completion_tokens_details.reasoning_tokens == 5


@pytest.mark.parametrize("provider", ["openai", "azure"])
async def test_hidden_reasoning_is_only_a_token_count(sim: Simulator, provider: str) -> None:
    """Real OpenAI (and Azure, by default) streams no reasoning text, only its count."""
    style = " reasoning_style=hidden" if provider == "openai" else ""
    prompt = f"Think quietly [[sim reasoning=7{style}]]"
    # (LiteLLM refuses reasoning_effort for an Azure deployment it cannot tell is o-series.)
    effort = {"reasoning_effort": "low"} if provider == "openai" else {}
    chunks = await stream(sim, provider, prompt, **effort)
    assert joined(chunks, "reasoning_content") == ""
    assert joined(chunks, "content") == answer_text(messages(prompt), 6)
    assert usage(chunks).completion_tokens_details.reasoning_tokens == 7
    assert usage(chunks).completion_tokens == 13


async def test_gemini_thoughts_become_reasoning_with_their_signature(sim: Simulator) -> None:
    """LiteLLM 1.110.2 streams Gemini thoughts as reasoning_content but no thinking_blocks:
    the signature rides in the delta's provider_specific_fields.thought_signatures."""
    prompt = "Think, Gemini [[sim reasoning=4 cached=3]]"
    chunks = await stream(sim, "gemini", prompt, reasoning_effort="low")
    (received,) = sim.requests(provider="gemini", prompt=prompt)
    assert received.body["generationConfig"]["thinkingConfig"]["includeThoughts"] is True
    assert joined(chunks, "reasoning_content") == expected_reasoning(messages(prompt), 4)
    assert joined(chunks, "content") == answer_text(messages(prompt), 6)
    assert thinking_blocks(chunks) == []
    signatures = [
        signature
        for chunk in chunks
        if chunk.choices
        for signature in (chunk.choices[0].delta.provider_specific_fields or {}).get(
            "thought_signatures", []
        )
    ]
    assert signatures == [thought_signature(messages(prompt))]
    found = usage(chunks)
    assert found.completion_tokens == 10  # candidatesTokenCount 6 + thoughtsTokenCount 4
    assert found.completion_tokens_details.reasoning_tokens == 4
    assert found.prompt_tokens_details.cached_tokens == 3


async def test_gemini_without_include_thoughts_sends_only_the_count(sim: Simulator) -> None:
    prompt = "Think, Gemini, silently [[sim reasoning=4]]"
    chunks = await stream(sim, "gemini", prompt)
    assert joined(chunks, "reasoning_content") == ""
    assert usage(chunks).completion_tokens_details.reasoning_tokens == 4


async def test_bedrock_reasoning_signature_and_redacted_block(sim: Simulator) -> None:
    prompt = "Think, Claude [[sim reasoning=4 redacted=1 cached=2]]"
    thinking = {"type": "enabled", "budget_tokens": 1024}
    chunks = await stream(sim, "bedrock", prompt, thinking=thinking)
    assert joined(chunks, "reasoning_content") == expected_reasoning(messages(prompt), 4)
    assert joined(chunks, "content") == answer_text(messages(prompt), 6)
    blocks = thinking_blocks(chunks)
    thoughts = [b for b in blocks if b["type"] == "thinking"]
    assert "".join(b["thinking"] for b in thoughts) == expected_reasoning(messages(prompt), 4)
    assert thoughts[-1]["signature"] == thought_signature(messages(prompt))
    (redacted,) = [b for b in blocks if b["type"] == "redacted_thinking"]
    assert redacted["data"] == redacted_data(messages(prompt)).decode()
    found = usage(chunks)
    assert found.completion_tokens == 10
    assert found.completion_tokens_details.reasoning_tokens == 4  # additionalModelResponseFields
    assert found.prompt_tokens_details.cached_tokens == 2
    assert found.prompt_tokens == count_prompt_tokens(messages(prompt)) + 2


@pytest.mark.parametrize("provider", ["openai", "azure", "bedrock"])
@pytest.mark.parametrize("interleave", [0, 1])
async def test_streamed_tool_calls_are_assembled_with_ids_names_and_arguments(
    sim: Simulator, provider: str, interleave: int
) -> None:
    prompt = f"Weather and time [[sim tools=2 tool_chunks=4 interleave={interleave}]]"
    chunks = await stream(sim, provider, prompt, tools=TOOLS)
    calls = assembled_calls(chunks)
    assert calls == as_dicts(prompt, provider)
    assert json.loads(calls[0]["arguments"])["days"] == 1
    assert finish(chunks) == "tool_calls"
    assert joined(chunks, "content") == ""


async def test_gemini_function_calls_arrive_whole_with_their_ids(sim: Simulator) -> None:
    prompt = "Weather twice [[sim tools=get_weather,get_weather tokens=2]]"
    chunks = await stream(sim, "gemini", prompt, tools=TOOLS)
    assert assembled_calls(chunks) == as_dicts(prompt, "gemini")
    assert joined(chunks, "content") == answer_text(messages(prompt), 2)
    assert finish(chunks) == "tool_calls"


async def test_gemini_signs_the_first_call_of_a_model_that_thought(sim: Simulator) -> None:
    """LiteLLM carries the signature inside the tool call's id, to get it back next turn."""
    prompt = "Weather after thought [[sim tools=1 reasoning=2]]"
    chunks = await stream(sim, "gemini", prompt, tools=TOOLS)
    (call,) = assembled_calls(chunks)
    (expected,) = as_dicts(prompt, "gemini")
    assert call["id"].startswith(expected["id"])
    assert call["id"].endswith(thought_signature(messages(prompt)))
    assert (call["name"], call["arguments"]) == (expected["name"], expected["arguments"])


@pytest.mark.parametrize("provider", ["openai", "azure"])
async def test_litellm_drops_a_streamed_refusal(sim: Simulator, provider: str) -> None:
    """The wire carries `delta.refusal` (test_rich checks the bytes); LiteLLM 1.110.2's
    stream wrapper keeps none of it, only the finish. Fails, usefully, once it does."""
    prompt = "Do something bad [[sim refuse=1 tokens=5]]"
    chunks = await stream(sim, provider, prompt)
    assert joined(chunks, "refusal") == ""
    assert all(
        "refusal" not in (chunk.choices[0].delta.provider_specific_fields or {})
        for chunk in chunks
        if chunk.choices
    )
    assert joined(chunks, "content") == ""
    assert finish(chunks) == "stop"


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        ("openai", ""),
        ("azure", ""),
        ("gemini", "SAFETY"),
        ("gemini", "PROHIBITED_CONTENT"),
        ("gemini", "RECITATION"),
        ("bedrock", "guardrail_intervened"),
        ("bedrock", "content_filtered"),
    ],
)
async def test_a_content_filter_stops_the_answer_as_content_filter(
    sim: Simulator, provider: str, reason: str
) -> None:
    named = f" filter={reason}" if reason else ""
    prompt = f"Something risky [[sim tokens=10 filter_after=3{named}]]"
    chunks = await stream(sim, provider, prompt)
    assert joined(chunks, "content") == answer_text(messages(prompt), 3)
    assert finish(chunks) == "content_filter"


@pytest.mark.parametrize("provider", ["openai", "azure", "gemini", "bedrock"])
async def test_cached_prompt_tokens_reach_the_usage(sim: Simulator, provider: str) -> None:
    prompt = "Cached [[sim cached=40]]"
    found = usage(await stream(sim, provider, prompt))
    assert found.prompt_tokens_details.cached_tokens == 40
    assert found.prompt_tokens == count_prompt_tokens(messages(prompt)) + 40
    assert found.completion_tokens == 6


def test_redacted_data_is_claude_style_base64_text() -> None:
    data = redacted_data(messages("x"))
    assert base64.b64decode(data, validate=True)[:1] == b"\x12"


@pytest.mark.parametrize("provider", ["openai", "azure", "gemini", "bedrock"])
async def test_the_router_path_reads_reasoning_and_tool_calls_alike(
    sim: Simulator, provider: str
) -> None:
    """The same answers through a LiteLLM Router deployment, as the worker's models file has."""
    router = litellm.Router(
        model_list=[{"model_name": "house", "litellm_params": route(sim, provider)}],
        num_retries=0,
    )
    style = " reasoning_style=reasoning_content" if provider in {"azure", "gemini"} else ""
    prompt = f"Route me [[sim reasoning=3 tools=1 tokens=2{style}]]"
    response = await router.acompletion(
        model="house", messages=messages(prompt), stream=True, tools=TOOLS,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in response]
    assert joined(chunks, "reasoning_content") == expected_reasoning(messages(prompt), 3)
    assert joined(chunks, "content") == answer_text(messages(prompt), 2)
    (call,) = assembled_calls(chunks)
    (expected,) = as_dicts(prompt, provider)
    assert (call["name"], call["arguments"]) == (expected["name"], expected["arguments"])
    assert call["id"].startswith(expected["id"])
    assert finish(chunks) == "tool_calls"
