"""What an attempt has streamed so far, and the `response_data` a job ends with (contract
sections 3 and 8): the answer as an OpenAI assistant message and as AI SDK UI parts."""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.jobs import Usage

_Kind = Literal["text", "reasoning", "tool"]


@dataclass(slots=True)
class _ToolCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Progress:
    """One attempt's notes: who took the call, when it started and sent its first token,
    and the answer so far, in the order the provider produced it.

    Text and reasoning go into one growing buffer each (not a string per chunk); `_runs`
    remembers only where each run of one kind starts, so that `parts()` keeps the order.
    """

    call_started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    provider: str | None = None
    text: io.StringIO = field(default_factory=io.StringIO)
    reasoning: io.StringIO = field(default_factory=io.StringIO)
    refusal: io.StringIO | None = None
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    _runs: list[tuple[_Kind, int]] = field(default_factory=list)
    _last: _Kind | None = None

    @property
    def has_output(self) -> bool:
        """Anything at all streamed: from then on a broken stream restarts the attempt."""
        return self.first_token_at is not None

    def call_started(self) -> None:
        """A new provider call (a retry before any output) starts the clock again."""
        self.call_started_at = time.monotonic()
        self.first_token_at = None
        self.provider = None

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.call_started_at) * 1000)

    def add_text(self, text: str) -> None:
        if self._last != "text":
            self._start("text", self.text.tell())
        self.text.write(text)

    def add_reasoning(self, text: str) -> None:
        if self._last != "reasoning":
            self._start("reasoning", self.reasoning.tell())
        self.reasoning.write(text)

    def add_refusal(self, text: str) -> None:
        """A refusal streams as the answer's text too, and is kept apart for `message`."""
        if self.refusal is None:
            self.refusal = io.StringIO()
        self.refusal.write(text)
        self.add_text(text)

    def add_tool_fragment(
        self, index: int, call_id: str | None, name: str | None, arguments: str
    ) -> None:
        call = self.tool_calls.get(index)
        if call is None:
            call = self.tool_calls[index] = _ToolCall()
            self._start("tool", index)
        call.id = call.id or call_id
        call.name = call.name or name
        if arguments:
            call.arguments.append(arguments)

    def _start(self, kind: _Kind, at: int) -> None:
        self._runs.append((kind, at))
        self._last = kind

    def all_output(self) -> str:
        """Everything the model produced, for counting tokens where no usage was reported."""
        calls = "".join("".join(call.arguments) for call in self.tool_calls.values())
        return self.reasoning.getvalue() + self.text.getvalue() + calls

    def message(self, thinking_blocks: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
        """The answer as an OpenAI chat assistant message, ready for the next job's messages."""
        text = self.text.getvalue()
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        calls = self._finished_calls()
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": a}}
                for c, a in calls
            ]
        reasoning = self.reasoning.getvalue()
        if reasoning:
            message["reasoning_content"] = reasoning
        if thinking_blocks:
            message["thinking_blocks"] = list(thinking_blocks)
        if self.refusal is not None:
            message["refusal"] = self.refusal.getvalue()
        return message

    def parts(self) -> list[dict[str, Any]]:
        """The same answer as AI SDK UI message parts, in the order produced."""
        sources = {"text": self.text.getvalue(), "reasoning": self.reasoning.getvalue()}
        calls = dict(self._finished_calls_by_index())
        parts: list[dict[str, Any]] = []
        for index, (kind, at) in enumerate(self._runs):
            if kind == "tool":
                call, arguments = calls[at]
                parts.append(
                    {
                        "type": f"tool-{call.name}",
                        "toolCallId": call.id,
                        "state": "input-available",
                        "input": _parsed(arguments),
                    }
                )
                continue
            # A run of text (or reasoning) lasts until the next run of its kind starts.
            source = sources[kind]
            later = (start for other, start in self._runs[index + 1 :] if other == kind)
            end = next(later, len(source))
            if end > at:
                parts.append({"type": kind, "text": source[at:end]})
        return parts

    def _finished_calls_by_index(self) -> list[tuple[int, tuple[_ToolCall, str]]]:
        finished = []
        for index in sorted(self.tool_calls):
            call = self.tool_calls[index]
            if call.id is None:
                # Providers that send calls whole (Gemini) give no id: one is made, as LiteLLM
                # does, so that the app can answer each call by its id.
                call.id = f"call_{uuid.uuid4().hex[:24]}"
            finished.append((index, (call, "".join(call.arguments))))
        return finished

    def _finished_calls(self) -> list[tuple[_ToolCall, str]]:
        return [pair for _, pair in self._finished_calls_by_index()]


def _parsed(arguments: str) -> Any:
    """A tool call's arguments as JSON where the model wrote valid JSON, else as written."""
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


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
    thinking_blocks: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """The row's `response_data`, for every ending: what is known by then."""
    data: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "finish_reason": finish_reason,
        "usage": None if usage is None else _usage(usage),
        "cost_usd": cost_usd,
        "ttft_ms": None if progress is None else progress.ttft_ms,
        "duration_ms": round((time.monotonic() - started) * 1000),
        "attempts": attempts,
    }
    if progress is not None:
        data["message"] = progress.message(thinking_blocks)
        data["parts"] = progress.parts()
    return data


def _usage(usage: Usage) -> dict[str, int]:
    counts = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        counts["reasoning_tokens"] = usage.reasoning_tokens
    if usage.cached_tokens is not None:
        counts["cached_tokens"] = usage.cached_tokens
    return counts
