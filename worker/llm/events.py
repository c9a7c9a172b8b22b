"""What an answer stream yields, in order: `Routed` once, `TextDelta`s, then `Answered` once.

Plain values instead of an object the stream fills in: the runner sees each fact as it
arrives, and nothing else writes to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.jobs import Usage


@dataclass(frozen=True, slots=True)
class Routed:
    """The provider that took the call (after any fallback), before its first text."""

    provider: str | None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Answered:
    """The stream ended with a finish reason: who answered, how, and what it used."""

    model: str
    provider: str | None
    finish_reason: str
    usage: Usage | None
    cost_usd: float | None
    # The LiteLLM model string and models-file entry id of the deployment that answered.
    deployment: str
    model_id: str | None


StreamEvent = Routed | TextDelta | Answered
