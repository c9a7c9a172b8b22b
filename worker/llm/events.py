"""What an answer stream yields: `Routed` once, then `TextDelta`, `ReasoningDelta`,
`RefusalDelta` and `ToolCallDelta` in the order the provider sent them, then `Answered` once.

Plain values instead of an object the stream fills in: the runner sees each fact as it
arrives, and nothing else writes to them. Every reader (the lean ones and the Router path)
yields the same events with the same meanings, whatever the provider's wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.jobs import Usage

# The finish reasons of contract section 8; a reader maps its provider's own to these
# (Gemini `SAFETY`/`PROHIBITED_CONTENT`/`RECITATION` and a Bedrock guardrail intervention
# are `content_filter`, Bedrock `tool_use` is `tool_calls`, `max_tokens` is `length`).
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


@dataclass(frozen=True, slots=True)
class Routed:
    """The provider that took the call (after any fallback), before its first token."""

    provider: str | None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking") text, kept apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A piece of a refusal (OpenAI's `refusal`): shown as the answer's text too."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call number `index`: `id` and `name` come with its first fragment
    (or whole, from providers that send calls whole), `arguments` in pieces of JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Answered:
    """The stream ended with a finish reason: who answered, how, and what it used."""

    model: str
    provider: str | None
    finish_reason: str  # one of FINISH_REASONS
    usage: Usage | None
    cost_usd: float | None
    # The LiteLLM model string and models-file entry id of the deployment that answered.
    deployment: str
    model_id: str | None
    # Claude's thinking blocks (with `signature`, or `redacted_thinking`), as LiteLLM shapes
    # them: needed verbatim to continue a conversation that used tools.
    thinking_blocks: tuple[dict[str, Any], ...] = ()


StreamEvent = Routed | TextDelta | ReasoningDelta | RefusalDelta | ToolCallDelta | Answered
