"""Rich answers: reasoning, tool calls, refusals, content-filter endings and usage details.

One script for every wire format: the directive says what the model does, the wire format
says what its provider shows of it (`Shape`), and the answer is the list of events that
format renders one chunk each. Everything is derived from the conversation, so tests can
predict it with `expected_reasoning`, `expected_tool_calls`, `thought_signature` and
`redacted_data`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.answers import (
    Answer,
    Conversation,
    Event,
    Finish,
    Message,
    Reasoning,
    RedactedReasoning,
    Refusal,
    Text,
    ToolArguments,
    ToolCall,
    ToolCalls,
    ToolCallStart,
    answer_text,
    answer_tokens,
    as_conversation,
    last_user_text,
)
from simulator.script import Directive, DirectiveError, parse_directive

_TOOL_ID_PREFIX = {"openai": "call_", "azure": "call_", "bedrock": "tooluse_", "gemini": ""}


@dataclass(frozen=True)
class Tool:
    """A tool a request defines: its name and its parameters' JSON schema."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shape:
    """What one wire format shows of a rich answer."""

    provider: str
    show_reasoning: bool = True
    reasoning_field: str = "reasoning_content"  # OpenAI formats: the delta's field
    whole_tool_calls: bool = False  # Gemini: each call in one part, all calls in one chunk
    interleave: bool = False  # OpenAI formats: parallel calls' pieces taken in turn
    redacted: bool = False  # Bedrock: a redacted reasoning block


@dataclass(frozen=True)
class RichPlan:
    """A rich answer and how many of its first events (reasoning, redacted or not) are paced
    over the thinking time."""

    answer: Answer
    think_count: int


def _salted(conversation: Conversation, salt: str) -> Conversation:
    # A message no provider sends: the same conversation seeds an independent sequence.
    return (*conversation, Message("simulator", salt))


def _digest(conversation: Conversation, salt: str) -> bytes:
    return hashlib.sha256(
        json.dumps([[m.role, m.text] for m in conversation], ensure_ascii=False).encode()
        + salt.encode()
    ).digest()


def expected_reasoning(messages: Conversation | Sequence[object] | object, count: int) -> str:
    """The reasoning text `reasoning=count` sends for a conversation (or OpenAI messages)."""
    return "".join(answer_tokens(_salted(as_conversation(messages), "reasoning"), count))


def thought_signature(messages: Conversation | Sequence[object] | object) -> str:
    """The signature closing a conversation's reasoning block (base64, as providers send it)."""
    return base64.b64encode(_digest(as_conversation(messages), "signature") * 2).decode()


def redacted_data(messages: Conversation | Sequence[object] | object) -> bytes:
    """The bytes of Bedrock's redacted reasoning block (`redacted=1`) for a conversation.

    As Claude's: its own redacted `data` is base64 text of an encrypted protobuf message
    (first byte a field tag), and Bedrock carries that text's bytes as `redactedContent`.
    """
    encrypted = b"\x12\x40" + _digest(as_conversation(messages), "redacted") * 2
    return base64.b64encode(encrypted)


def openai_tools(tools: object) -> tuple[Tool, ...]:
    """The tools of an OpenAI request (`tools[].function`), names and parameter schemas."""
    found = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            found.append(Tool(function["name"], parameters if isinstance(parameters, dict) else {}))
    return tuple(found)


def _value(schema: object, text: str, index: int) -> object:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "integer":
        return index + 1
    if kind == "number":
        return index + 0.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [text]
    if kind == "object":
        return {}
    return text


def _arguments(conversation: Conversation, tool: Tool, index: int) -> str:
    """JSON arguments filling every property the tool's schema names (strings by default)."""
    properties = tool.parameters.get("properties")
    if not isinstance(properties, dict) or not properties:
        properties = {"call": {"type": "integer"}, "text": {"type": "string"}}
    values = {
        name: _value(schema, answer_text(_salted(conversation, f"{tool.name}/{index}/{name}"), 3),
                     index)
        for name, schema in properties.items()
    }  # fmt: skip
    return json.dumps(values, ensure_ascii=False)


def _call_id(conversation: Conversation, provider: str, index: int) -> str:
    digest = _digest(conversation, f"tool-call/{index}")
    if provider == "bedrock":
        return "tooluse_" + base64.urlsafe_b64encode(digest).decode()[:22]
    return _TOOL_ID_PREFIX.get(provider, "call_") + digest.hex()[:24]


def _chosen(tools: Sequence[Tool], wanted: int | tuple[str, ...]) -> list[Tool]:
    if not wanted:
        return []
    if not tools:
        raise DirectiveError("simulator directive tools needs a request that defines tools")
    if isinstance(wanted, int):
        return [tools[i % len(tools)] for i in range(wanted)]
    by_name = {tool.name: tool for tool in tools}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise DirectiveError(f"simulator directive tools names undefined tools: {missing}")
    return [by_name[name] for name in wanted]


def tool_calls(
    conversation: Conversation,
    tools: Sequence[Tool],
    wanted: int | tuple[str, ...],
    *,
    provider: str,
) -> tuple[ToolCall, ...]:
    """The calls `tools=wanted` makes: ids, names, JSON arguments; raises DirectiveError."""
    return tuple(
        ToolCall(_call_id(conversation, provider, i), tool.name, _arguments(conversation, tool, i))
        for i, tool in enumerate(_chosen(tools, wanted))
    )


def expected_tool_calls(
    messages: Conversation | Sequence[object] | object,
    tools: Sequence[Tool | str] | object,
    *,
    provider: str = "openai",
) -> list[ToolCall]:
    """The tool calls the simulator answers a conversation with, per its `tools=` directive.

    `messages` is the conversation as OpenAI messages (a Gemini or Bedrock request's in the
    same roles and texts, system first); `tools` the request's tools as `Tool` values, names
    or OpenAI `tools` dicts (only the schema's properties matter); `provider` picks the id
    style (`call_…`, Bedrock `tooluse_…`, Gemini bare hex).
    """
    conversation = as_conversation(messages)
    directive = parse_directive(last_user_text(conversation))
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        defined: Sequence[Tool] = openai_tools(tools)
    else:
        items = tools if isinstance(tools, list | tuple) else ()
        defined = [tool if isinstance(tool, Tool) else Tool(str(tool)) for tool in items]
    return list(tool_calls(conversation, defined, directive.tools, provider=provider))


def argument_pieces(arguments: str, chunks: int) -> list[str]:
    """The arguments cut into `chunks` pieces of near-equal length (fewer if it is shorter)."""
    count = max(1, min(chunks, len(arguments)))
    cuts = [len(arguments) * i // count for i in range(count + 1)]
    return [arguments[a:b] for a, b in itertools.pairwise(cuts)]


def _tool_events(
    calls: Sequence[ToolCall], directive: Directive, shape: Shape, signature: str
) -> list[Event]:
    if shape.whole_tool_calls:
        # Gemini signs the first call of a model that thought, shown thoughts or not.
        signed = signature if directive.reasoning else None
        return [ToolCalls(tuple(calls), signature=signed)] if calls else []
    pieces = [argument_pieces(call.arguments, directive.tool_chunks) for call in calls]
    if not shape.interleave:
        events: list[Event] = []
        for index, call in enumerate(calls):
            events.append(ToolCallStart(index, call))
            events.extend(ToolArguments(index, piece) for piece in pieces[index])
        return events
    events = [ToolCallStart(index, call) for index, call in enumerate(calls)]
    for turn in range(max(map(len, pieces), default=0)):
        events.extend(
            ToolArguments(index, own[turn]) for index, own in enumerate(pieces) if turn < len(own)
        )
    return events


def _reasoning_events(
    conversation: Conversation, directive: Directive, shape: Shape
) -> list[Event]:
    events: list[Event] = []
    if directive.reasoning and shape.show_reasoning:
        tokens = answer_tokens(_salted(conversation, "reasoning"), directive.reasoning)
        events = [Reasoning(token) for token in tokens[:-1]]
        events.append(Reasoning(tokens[-1], signature=thought_signature(conversation)))
    if directive.redacted and shape.redacted:
        events.append(RedactedReasoning(redacted_data(conversation)))
    return events


def text_token_count(directive: Directive, default: int) -> int:
    """How many text tokens the answer has: none before tool calls unless `tokens=` says."""
    if directive.tokens is not None:
        return directive.tokens
    return 0 if directive.tools else default


def _finish(events: Sequence[Event], directive: Directive, truncated: bool) -> Finish:
    if directive.filter_after is not None:
        return "content_filter"
    if any(isinstance(event, ToolCallStart | ToolCalls) for event in events):
        return "tool_calls"
    return "length" if truncated else "stop"


def _tool_tokens(events: Sequence[Event], directive: Directive) -> int:
    streamed = sum(isinstance(event, ToolArguments) for event in events)
    whole = sum(
        len(argument_pieces(call.arguments, directive.tool_chunks))
        for event in events
        if isinstance(event, ToolCalls)
        for call in event.calls
    )
    return streamed + whole


def rich_answer(
    *,
    model: str,
    conversation: Conversation,
    directive: Directive,
    tools: Sequence[Tool],
    text: Sequence[str],
    truncated: bool,
    prompt_tokens: int,
    shape: Shape,
) -> RichPlan:
    """The answer a rich directive scripts, as `shape`'s format shows it."""
    reasoning = _reasoning_events(conversation, directive, shape)
    kind = Refusal if directive.refuse else Text
    calls = tool_calls(conversation, tools, directive.tools, provider=shape.provider)
    tool_events = _tool_events(calls, directive, shape, thought_signature(conversation))
    events = [*reasoning, *(kind(token) for token in text), *tool_events]
    if directive.filter_after is not None:
        events = events[: directive.filter_after]
    shown = sum(isinstance(event, Reasoning) for event in events)
    thinking = sum(isinstance(event, Reasoning | RedactedReasoning) for event in events)
    answer = Answer(
        model=model,
        events=tuple(events),
        finish=_finish(events, directive, truncated),
        prompt_tokens=prompt_tokens + directive.cached,
        reasoning_tokens=shown if shape.show_reasoning else directive.reasoning,
        tool_tokens=_tool_tokens(events, directive),
        cached_tokens=directive.cached,
        filter_reason=directive.filter,
        reasoning_field=shape.reasoning_field,
    )
    return RichPlan(answer, think_count=thinking if directive.think_s else 0)
