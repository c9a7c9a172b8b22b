"""Rich answers on the wire: the exact events each format sends for reasoning, tool calls,
refusals, content-filter endings and usage details, and the request fields they come with."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from botocore.eventstream import EventStreamBuffer

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
from simulator.answers import Answer, Message, Reasoning, Refusal, Text, ToolArguments
from simulator.openai import ChunkRenderer
from simulator.rich import Tool, argument_pieces
from simulator.script import DirectiveError, parse_directive

OPENAI = "/v1/chat/completions"
AZURE = "/openai/deployments/prod/chat/completions?api-version=2024-10-21"
GEMINI = "/models/gemini-3.5-flash:streamGenerateContent?alt=sse"
BEDROCK = "/model/anthropic.claude-sonnet-4-5/converse-stream"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=4, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


async def post(sim: Simulator, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + path, json=body) as resp,
    ):
        return resp.status, await resp.read()


def user(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


async def openai_chunks(sim: Simulator, prompt: str, path: str = OPENAI, **extra: Any) -> Any:
    body = {"model": "m", "messages": user(prompt), "stream": True,
            "stream_options": {"include_usage": True}, **extra}  # fmt: skip
    status, raw = await post(sim, path, body)
    assert status == 200, raw
    events = raw.decode().removesuffix("\n\n").split("\n\n")
    assert events[-1] == "data: [DONE]"
    return [json.loads(event.removeprefix("data: ")) for event in events[:-1]]


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


async def gemini_chunks(sim: Simulator, prompt: str, **extra: Any) -> list[dict[str, Any]]:
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra}
    status, raw = await post(sim, GEMINI, body)
    assert status == 200, raw
    return [json.loads(p.removeprefix(b"data: ")) for p in raw.split(b"\r\n\r\n") if p]


async def bedrock_events(sim: Simulator, prompt: str, **extra: Any) -> list[tuple[str, Any]]:
    body = {"messages": [{"role": "user", "content": [{"text": prompt}]}], **extra}
    status, raw = await post(sim, BEDROCK, body)
    assert status == 200, raw
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]


async def test_openai_streams_reasoning_content_then_text_and_counts_it(sim: Simulator) -> None:
    prompt = "Why? [[sim reasoning=3 cached=5]]"
    chunks = await openai_chunks(sim, prompt)
    reasoning = expected_reasoning(user(prompt), 3)
    assert [d.get("reasoning_content") for d in deltas(chunks)[1:4]] != [None] * 3
    assert "".join(d.get("reasoning_content", "") for d in deltas(chunks)) == reasoning
    assert "".join(d.get("content", "") for d in deltas(chunks)) == answer_text(user(prompt), 4)
    prompt_tokens = count_prompt_tokens(user(prompt)) + 5
    assert chunks[-1]["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 7,
        "total_tokens": prompt_tokens + 7,
        "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }  # fmt: skip


async def test_reasoning_style_names_the_delta_field_or_hides_it(sim: Simulator) -> None:
    shown = deltas(await openai_chunks(sim, "Why? [[sim reasoning=2 reasoning_style=reasoning]]"))
    assert [set(d) for d in shown[1:3]] == [{"reasoning"}, {"reasoning"}]
    hidden = await openai_chunks(sim, "Why? [[sim reasoning=2 reasoning_style=hidden]]")
    assert len(hidden) == 1 + 4 + 2
    assert hidden[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    azure = await openai_chunks(sim, "Why? [[sim reasoning=2]]", AZURE)
    assert all("reasoning_content" not in d for d in deltas(azure))


@pytest.mark.parametrize("interleave", [0, 1])
async def test_openai_tool_calls_start_with_id_and_name_then_argument_pieces(
    sim: Simulator, interleave: int
) -> None:
    prompt = f"Go [[sim tools=2 tool_chunks=3 interleave={interleave}]]"
    chunks = await openai_chunks(sim, prompt, tools=[WEATHER, CLOCK])
    first, second = expected_tool_calls(user(prompt), [WEATHER, CLOCK])
    fragments = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert fragments[0] == {"index": 0, "id": first.id, "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip
    order = [f["index"] for f in fragments]
    assert order == ([0, 1, 0, 1, 0, 1, 0, 1] if interleave else [0, 0, 0, 0, 1, 1, 1, 1])
    for index, call in enumerate((first, second)):
        pieces = [f["function"]["arguments"] for f in fragments[1:] if f["index"] == index]
        assert "".join(pieces) == call.arguments
        assert pieces[-3:] == argument_pieces(call.arguments, 3)
    assert first.id.startswith("call_")
    assert json.loads(first.arguments).keys() == {"city", "days"}
    assert json.loads(second.arguments).keys() == {"call", "text"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_openai_refusal_pieces_replace_content(sim: Simulator) -> None:
    prompt = "Bad [[sim refuse=1]]"
    chunks = await openai_chunks(sim, prompt)
    assert [set(d) for d in deltas(chunks)[1:5]] == [{"refusal"}] * 4
    assert "".join(d.get("refusal", "") for d in deltas(chunks)) == answer_text(user(prompt), 4)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_azure_content_filter_flags_the_stopped_answer(sim: Simulator) -> None:
    chunks = await openai_chunks(sim, "Risky [[sim filter_after=2]]", AZURE)
    assert chunks[0]["choices"] == []
    assert "prompt_filter_results" in chunks[0]
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "content_filter"
    assert finish["content_filter_results"]["violence"] == {"filtered": True, "severity": "high"}
    assert len(chunks) == 1 + 1 + 2 + 2


async def test_gemini_thought_parts_carry_the_signature_and_their_own_count(
    sim: Simulator,
) -> None:
    prompt = "Why? [[sim reasoning=3 cached=2]]"
    thinking = {"thinkingConfig": {"includeThoughts": True}}
    chunks = await gemini_chunks(sim, prompt, generationConfig=thinking)
    parts = [c["candidates"][0]["content"]["parts"][0] for c in chunks[:3]]
    assert all(part["thought"] is True for part in parts)
    assert "".join(part["text"] for part in parts) == expected_reasoning(user(prompt), 3)
    assert [("thoughtSignature" in part) for part in parts] == [False, False, True]
    assert parts[-1]["thoughtSignature"] == thought_signature(user(prompt))
    usage = chunks[-1]["usageMetadata"]
    prompt_tokens = count_prompt_tokens(user(prompt)) + 2
    assert (usage["promptTokenCount"], usage["cachedContentTokenCount"]) == (prompt_tokens, 2)
    assert (usage["candidatesTokenCount"], usage["thoughtsTokenCount"]) == (4, 3)
    assert usage["totalTokenCount"] == prompt_tokens + 7


async def test_gemini_function_calls_come_whole_in_one_chunk(sim: Simulator) -> None:
    prompt = "Go [[sim tools=get_time,get_weather]]"
    tools = [{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]
    chunks = await gemini_chunks(sim, prompt, tools=tools)
    assert len(chunks) == 2
    parts = chunks[0]["candidates"][0]["content"]["parts"]
    calls = expected_tool_calls(user(prompt), ["get_weather", "get_time"], provider="gemini")
    assert parts == [
        {"functionCall": {"id": c.id, "name": c.name, "args": json.loads(c.arguments)}}
        for c in calls
    ]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "RECITATION"])
async def test_gemini_filter_ends_with_a_contentless_candidate(sim: Simulator, reason: str) -> None:
    chunks = await gemini_chunks(sim, f"Risky [[sim filter_after=1 filter={reason}]]")
    last = chunks[-1]["candidates"][0]
    assert len(chunks) == 2
    assert "content" not in last
    assert last["finishReason"] == reason
    assert ("safetyRatings" in last) is (reason == "SAFETY")


async def test_bedrock_sends_each_block_with_its_deltas_and_stop(sim: Simulator) -> None:
    prompt = "Go [[sim reasoning=2 redacted=1 tokens=2 tools=1 tool_chunks=2 cached=3]]"
    tool_config = {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {}}}}]}
    events = await bedrock_events(
        sim,
        prompt,
        toolConfig=tool_config,
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        additionalModelResponseFieldPaths=["/usage/output_tokens_details"],
    )
    (call,) = expected_tool_calls(user(prompt), ["lookup"], provider="bedrock")
    pieces = argument_pieces(call.arguments, 2)
    simplified = [(kind, {k: v for k, v in body.items() if k != "p"}) for kind, body in events]
    signature = thought_signature(user(prompt))
    redacted = base64.b64encode(redacted_data(user(prompt))).decode()
    text = answer_text(user(prompt), 2)
    assert [kind for kind, _ in simplified] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta",
        "contentBlockStop", "contentBlockDelta", "contentBlockStop", "contentBlockDelta",
        "contentBlockDelta", "contentBlockStop", "contentBlockStart", "contentBlockDelta",
        "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
    ]  # fmt: skip
    assert simplified[3][1] == {
        "contentBlockIndex": 0,
        "delta": {"reasoningContent": {"signature": signature}},
    }
    assert simplified[5][1] == {
        "contentBlockIndex": 1,
        "delta": {"reasoningContent": {"redactedContent": redacted}},
    }
    assert "".join(b["delta"]["text"] for _, b in simplified[7:9]) == text
    assert simplified[10][1] == {
        "contentBlockIndex": 3,
        "start": {"toolUse": {"toolUseId": call.id, "name": "lookup"}},
    }
    assert [b["delta"]["toolUse"]["input"] for _, b in simplified[11:13]] == pieces
    assert simplified[13][1] == {"contentBlockIndex": 3}
    assert simplified[14][1] == {
        "stopReason": "tool_use",
        "additionalModelResponseFields": {
            "usage": {"output_tokens_details": {"thinking_tokens": 2}}
        },
    }
    prompt_tokens = count_prompt_tokens(user(prompt))
    assert simplified[15][1]["usage"] == {
        "inputTokens": prompt_tokens,
        "outputTokens": 2 + 2 + 2,
        "totalTokens": prompt_tokens + 3 + 6,
        "cacheReadInputTokens": 3,
        "cacheWriteInputTokens": 0,
    }  # fmt: skip
    assert call.id.startswith("tooluse_")


@pytest.mark.parametrize("reason", ["guardrail_intervened", "content_filtered"])
async def test_bedrock_filter_stops_with_its_reason(sim: Simulator, reason: str) -> None:
    events = await bedrock_events(sim, f"Risky [[sim filter_after=2 filter={reason}]]")
    assert [kind for kind, _ in events].count("contentBlockDelta") == 2
    assert events[-2][1]["stopReason"] == reason


async def test_think_s_spreads_reasoning_and_delays_the_first_text(sim: Simulator) -> None:
    """Reasoning pieces arrive across think_s; the text only after it (or silence, hidden)."""
    for style, first_kind in (("reasoning_content", "reasoning_content"), ("hidden", "content")):
        prompt = f"Slow [[sim reasoning=4 think_s=0.6 reasoning_style={style}]]"
        body = {"model": "m", "messages": user(prompt), "stream": True}
        arrivals: list[tuple[float, str]] = []
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.url + OPENAI, json=body) as resp,
        ):
            loop = asyncio.get_running_loop()
            started = loop.time()
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    arrivals.extend((loop.time() - started, key) for key, v in delta.items() if v)
        first_text = next(t for t, key in arrivals if key == "content")
        firsts = [t for t, key in arrivals if key == first_kind]
        assert first_text >= 0.55
        if style == "hidden":
            assert firsts[0] >= 0.55
        else:
            assert firsts[0] < 0.1
            assert 0.3 < firsts[-1] < first_text


async def test_requests_with_rich_history_and_media_are_read(sim: Simulator) -> None:
    """Tool turns, reasoning, images and files in the history: read as their text only."""
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA"}},
        ]},
        {"role": "assistant", "content": None, "reasoning_content": "hmm",
         "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "c2ln"}],
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip
    body = {"model": "m", "messages": messages, "stream": True, "tools": [WEATHER],
            "tool_choice": "auto", "reasoning_effort": "high"}  # fmt: skip
    status, raw = await post(sim, OPENAI, body)
    assert status == 200
    chunks = [json.loads(e.removeprefix("data: ")) for e in raw.decode().split("\n\n")[:-2]]
    text_only = (Message("user", "Look"), Message("assistant", ""), Message("tool", "sunny"),
                 Message("user", "Thanks"))  # fmt: skip
    assert "".join(d.get("content", "") for d in deltas(chunks)) == answer_text(text_only, 4)


async def test_gemini_and_bedrock_histories_with_tools_and_media_are_read(
    sim: Simulator,
) -> None:
    contents = [
        {"role": "user", "parts": [{"text": "Look"}, {"inlineData": {"mimeType": "image/png",
                                                                     "data": "AAAA"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}},
                                     "thoughtSignature": "c2ln"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": 1}}}]},
        {"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/x.pdf"}}, {"text": "Go"}]},
    ]  # fmt: skip
    config = {"thinkingConfig": {"thinkingBudget": 512}}
    status, _ = await post(sim, GEMINI, {"contents": contents, "generationConfig": config})
    assert status == 200
    messages = [
        {"role": "user", "content": [{"text": "Look"}, {"image": {"format": "png",
                                                                  "source": {"bytes": "AA"}}}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "c2ln"}}},
            {"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
                                                     "content": [{"text": "ok"}]}}]},
        {"role": "user", "content": [{"document": {"name": "d", "format": "pdf",
                                                   "source": {"bytes": "AA"}}}, {"text": "Go"}]},
    ]  # fmt: skip
    fields = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    body = {"messages": messages, "additionalModelRequestFields": fields}
    assert (await post(sim, BEDROCK, body))[0] == 200


@pytest.mark.parametrize(
    ("prompt", "tools", "message"),
    [
        ("Go [[sim tools=1]]", None, "defines tools"),
        ("Go [[sim tools=nope]]", [WEATHER], "undefined tools"),
    ],
)
async def test_tool_calls_need_the_tools_the_request_defines(
    sim: Simulator, prompt: str, tools: Any, message: str
) -> None:
    body = {"model": "m", "messages": user(prompt), "stream": True}
    if tools:
        body["tools"] = tools
    status, raw = await post(sim, OPENAI, body)
    assert status == 400
    assert message in json.loads(raw)["error"]["message"]


async def test_a_whole_openai_answer_holds_reasoning_and_tool_calls(sim: Simulator) -> None:
    prompt = "Go [[sim tools=1 reasoning=2 tokens=1]]"
    body = {"model": "m", "messages": user(prompt), "tools": [WEATHER]}
    status, raw = await post(sim, OPENAI, body)
    assert status == 200
    (choice,) = json.loads(raw)["choices"]
    (call,) = expected_tool_calls(user(prompt), [WEATHER])
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == expected_reasoning(user(prompt), 2)
    assert choice["message"]["content"] == answer_text(user(prompt), 1)
    assert choice["message"]["tool_calls"] == [{"id": call.id, "type": "function",
        "function": {"name": "get_weather", "arguments": call.arguments}}]  # fmt: skip


def test_rich_keys_parse_and_bad_values_are_refused() -> None:
    directive = parse_directive("[[sim reasoning=3 tools=a,b tool_chunks=2 filter=SAFETY]]")
    assert (directive.reasoning, directive.tools, directive.tool_chunks) == (3, ("a", "b"), 2)
    assert directive.is_rich
    assert parse_directive("[[sim tools=2]]").tools == 2
    assert not parse_directive("[[sim tokens=3]]").is_rich
    for bad in ("tool_chunks=0", "reasoning=-1", "filter=LOUD", "reasoning_style=x", "tools=a,"):
        with pytest.raises(DirectiveError):
            parse_directive(f"[[sim {bad}]]")


def test_argument_pieces_cover_the_arguments_in_near_equal_parts() -> None:
    assert argument_pieces('{"a": 1}', 3) == ['{"', 'a":', " 1}"]
    assert argument_pieces("{}", 5) == ["{", "}"]
    assert expected_tool_calls(user("[[sim tools=1]]"), [Tool("t")])[0].name == "t"


@pytest.mark.parametrize(
    "event",
    [Reasoning("日本語🚀"), Refusal(" no"), ToolArguments(2, '{"a": "ü'), Text(" Ωmega")],
)
def test_templated_chunks_are_the_bytes_json_would_write(event: Any) -> None:
    """The byte templates of frequent pieces equal the plain JSON rendering of their delta."""
    answer = Answer(model="m", events=(event,), finish="stop", prompt_tokens=1)
    renderer = ChunkRenderer(
        answer, include_usage=False, choice_extra={"content_filter_results": {}}
    )
    if isinstance(event, Reasoning):
        delta: dict[str, Any] = {"reasoning_content": event.text}
    elif isinstance(event, Refusal):
        delta = {"refusal": event.text}
    elif isinstance(event, ToolArguments):
        delta = {"tool_calls": [{"index": 2, "function": {"arguments": event.piece}}]}
    else:
        delta = {"content": event.text}
    assert renderer.event(event) == renderer._chunk([renderer._choice(delta, None)])


async def test_faults_count_rich_chunks_and_split_cuts_reasoning_too(sim: Simulator) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await openai_chunks(sim, "Cut [[sim reasoning=5 drop_after=2]]")
    dropped = sim.requests(prompt="Cut [[sim reasoning=5 drop_after=2]]")[-1]
    assert dropped.outcome == "dropped"
    prompt = "Split [[sim reasoning=3 split=1]]"
    chunks = await openai_chunks(sim, prompt)
    assert "".join(d.get("reasoning_content", "") for d in deltas(chunks)) == expected_reasoning(
        user(prompt), 3
    )


async def test_a_conversation_that_carries_the_tools_results_is_answered_not_called_again(
    sim: Simulator,
) -> None:
    question = {"role": "user", "content": "Weather? [[sim tools=1]]"}
    [call] = expected_tool_calls([question], [WEATHER])
    messages = [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    body = {"model": "gpt-4o-mini", "messages": messages, "tools": [WEATHER], "stream": True}
    status, raw = await post(sim, OPENAI, body)
    assert status == 200
    assert b"tool_calls" not in raw
    chunks = [
        json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer_text(messages, 4)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
