"""What an attempt has streamed so far, and the `response_data` a job ends with (contract 3)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

from worker.jobs import Usage


@dataclass(slots=True)
class Progress:
    """One attempt's notes: its text (for counting tokens when the provider reports no
    usage, in one growing buffer rather than a string per chunk), who took the call, and
    when the call that answered started and sent its first token."""

    text: io.StringIO = field(default_factory=io.StringIO)
    call_started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    provider: str | None = None

    @property
    def has_text(self) -> bool:
        return self.text.tell() > 0

    def call_started(self) -> None:
        """A new provider call (a retry before any text) starts the clock again."""
        self.call_started_at = time.monotonic()
        self.first_token_at = None
        self.provider = None

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.call_started_at) * 1000)


def response_data(
    *,
    model: str | None,
    provider: str | None,
    finish_reason: str | None,
    usage: Usage | None,
    cost_usd: float | None,
    progress: Progress | None,
    started: float,
    attempts: int,
) -> dict[str, Any]:
    """The row's `response_data`, for every ending: what is known by then."""
    return {
        "model": model,
        "provider": provider,
        "finish_reason": finish_reason,
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "cost_usd": cost_usd,
        "ttft_ms": None if progress is None else progress.ttft_ms,
        "duration_ms": round((time.monotonic() - started) * 1000),
        "attempts": attempts,
    }
