"""Deterministic answers: the conversation a request carries, and what the simulator says to it.

Every wire format is read into the same `Conversation` (OpenAI chat form, text only), so a
prompt gets the same answer from every provider's route. An `Answer` is a list of typed
events that each wire module renders in its own format: text, and for rich answers
(`simulator.rich` scripts them) reasoning, refusal and tool-call events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

_VOCAB = (
    " the", " stream", " token", " café", " naïve", " 日本語", " Ωmega", " 🚀", " ß", "—",
    " river", " quick", " über", " façade", " 你好", " résumé", " worker", " chunk", ",",
    " data", " Ж", " jalapeño", " ✓", " answer", ".", " 🌊", " cœur", " light", " π",
)  # fmt: skip
# Cached JSON so the per-chunk hot path does no encoding work for vocabulary tokens.
TOKEN_JSON = {token: json.dumps(token, ensure_ascii=False).encode() for token in _VOCAB}
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Message:
    """One message of a conversation: its role (`system`, `user`, `assistant`) and text."""

    role: str
    text: str


Conversation = tuple[Message, ...]


def openai_conversation(messages: object) -> Conversation:
    """OpenAI chat messages (content a string or a list of parts) as a conversation."""
    if not isinstance(messages, list):
        return ()
    return tuple(
        Message(str(message.get("role", "")), _openai_text(message.get("content")))
        for message in messages
        if isinstance(message, dict)
    )


def _openai_text(content: object) -> str:
    if isinstance(content, str):
        return content
    return parts_text(content)


def parts_text(parts: object) -> str:
    """The text of a list of parts or blocks (`{"text": ...}` items), joined."""
    if not isinstance(parts, list):
        return ""
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def last_user_text(conversation: Conversation) -> str:
    """The last user message's text: where directives are read, and the request log's prompt."""
    users = [message.text for message in conversation if message.role == "user"]
    return users[-1] if users else ""


def _canonical(conversation: Conversation) -> bytes:
    # The same bytes as json.dumps of [{"role", "content"}] dicts, so that answers to plain
    # OpenAI messages stay what they were before conversations were normalised.
    plain = [{"role": message.role, "content": message.text} for message in conversation]
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(conversation: Conversation) -> str:
    """A short stable id of a conversation: the request log's key, and the fault counters'."""
    return hashlib.sha256(_canonical(conversation)).hexdigest()[:16]


def as_conversation(messages: Conversation | Sequence[object] | object) -> Conversation:
    """A conversation as is, or OpenAI chat messages read as one."""
    if isinstance(messages, tuple) and all(isinstance(m, Message) for m in messages):
        return messages
    return openai_conversation(list(messages) if isinstance(messages, list | tuple) else messages)


def answer_tokens(
    messages: Conversation | Sequence[object] | object, count: int, *, ending: str = ""
) -> list[str]:
    """The deterministic answer tokens for a conversation (or OpenAI messages).

    Varied (no two equal neighbours), mixing ASCII with 2-, 3- and 4-byte UTF-8; the first
    `n` tokens of a longer answer are the answer of `n` tokens. `ending`, if given, replaces
    the last token (the simulator's `answer_ending` setting).
    """
    state = int.from_bytes(
        hashlib.sha256(_canonical(as_conversation(messages))).digest()[:8], "big"
    )
    out: list[str] = []
    prev = -1
    for _ in range(count):
        # splitmix64 instead of random.Random: the sequence is fixed by this code, not Python.
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        # Drawing from n-1 and skipping prev keeps consecutive tokens distinct.
        idx = z % (len(_VOCAB) - (prev >= 0))
        if 0 <= prev <= idx:
            idx += 1
        out.append(_VOCAB[idx])
        prev = idx
    if out:
        out[0] = out[0].lstrip()
        if ending:
            out[-1] = ending
    return out


def answer_text(
    messages: Conversation | Sequence[object] | object, count: int, *, ending: str = ""
) -> str:
    """The deterministic answer text for a conversation (or OpenAI messages)."""
    return "".join(answer_tokens(messages, count, ending=ending))


def count_prompt_tokens(messages: Conversation | Sequence[object] | object) -> int:
    """The prompt token count the simulator reports: words in every message, at least 1."""
    return max(1, sum(len(message.text.split()) for message in as_conversation(messages)))


@dataclass(frozen=True)
class Text:
    """A piece of answer text: one content chunk on the wire."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """A piece of reasoning text; the block's last piece carries its signature (Gemini, Bedrock)."""

    text: str
    signature: str | None = None


@dataclass(frozen=True)
class RedactedReasoning:
    """A reasoning block the provider encrypted (Bedrock Claude's `redactedContent`)."""

    data: bytes


@dataclass(frozen=True)
class Refusal:
    """A piece of a refusal: OpenAI's `delta.refusal`; other formats send it as text."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """One whole tool call, as an OpenAI assistant message's `tool_calls` entry holds it."""

    id: str
    name: str
    arguments: str  # the JSON text of the arguments


@dataclass(frozen=True)
class ToolCallStart:
    """A streamed tool call's first fragment: its id and name (OpenAI, Bedrock)."""

    index: int
    call: ToolCall


@dataclass(frozen=True)
class ToolArguments:
    """A piece of a streamed tool call's JSON arguments (OpenAI, Bedrock)."""

    index: int
    piece: str


@dataclass(frozen=True)
class ToolCalls:
    """Tool calls sent whole, in one chunk (Gemini's `functionCall` parts)."""

    calls: tuple[ToolCall, ...]
    signature: str | None = None  # on the first call's part, when the model reasoned


Event = Text | Reasoning | RedactedReasoning | Refusal | ToolCallStart | ToolArguments | ToolCalls
# Why an answer ended, in OpenAI's words; each wire module maps it to its provider's.
Finish = Literal["stop", "length", "tool_calls", "content_filter"]
_VISIBLE_TOKENS = (Text, Refusal)


@dataclass(frozen=True)
class Answer:
    """What one request is answered with, before any scripted fault cuts it short.

    Token counts: each text or refusal event is one completion token; `reasoning_tokens`
    and `tool_tokens` add to them (they count whether or not the wire shows the pieces).
    `cached_tokens` of the prompt came from the provider's cache (and are part of
    `prompt_tokens`); `filter_reason` is the provider's own word for a content-filter ending.
    """

    model: str
    events: tuple[Event, ...]
    finish: Finish
    prompt_tokens: int
    reasoning_tokens: int = 0
    tool_tokens: int = 0
    cached_tokens: int = 0
    filter_reason: str | None = None
    reasoning_field: str = "reasoning_content"  # OpenAI formats: the delta field of reasoning

    @property
    def completion_tokens(self) -> int:
        visible = sum(isinstance(event, _VISIBLE_TOKENS) for event in self.events)
        return visible + self.reasoning_tokens + self.tool_tokens

    @property
    def text(self) -> str:
        return "".join(event.text for event in self.events if isinstance(event, Text))
