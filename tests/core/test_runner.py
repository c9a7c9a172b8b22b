"""The runner's retry decisions, with a scripted LLM, the real writer and an in-process store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.core.doubles import FakeClaims, FakeFlushes, Script, ScriptedCompleter
from worker.errors import AuthError, ErrorCode, ProviderUnavailable, StreamBroken
from worker.jobs import Claim, Ending, Outcome
from worker.llm.events import Answered, ReasoningDelta, Routed, TextDelta, ToolCallDelta
from worker.runner import JobRunner, Timeouts
from worker.slots import Slots
from worker.writer import StreamWriter

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def make_runner(
    sink: StreamWriter,
    completer: ScriptedCompleter,
    *,
    claims: FakeClaims,
    first_token_s: float = 5,
    retries: int = 3,
    max_attempts: int = 3,
    slots: Slots | None = None,
) -> JobRunner:
    return JobRunner(
        store=claims,
        writer=sink,
        llm=completer,
        slots=slots or Slots(4, max_parked=4),
        timeouts=Timeouts(first_token_s=first_token_s, stall_s=5, job_s=30),
        provider_retries=retries,
        max_attempts=max_attempts,
        lease_s=30,
    )


@pytest.fixture
async def flushes() -> AsyncIterator[tuple[FakeFlushes, StreamWriter]]:
    store = FakeFlushes()
    sink = StreamWriter(
        store, flush_interval_s=0.01, flush_max_chars=8192, content_refresh_s=0, lease_s=30
    )
    task = asyncio.create_task(sink.run())
    yield store, sink
    sink.close()
    await task


async def run(
    flushes: tuple[FakeFlushes, StreamWriter],
    scripts: list[Script],
    *,
    max_attempts: int = 3,
    retries: int = 3,
) -> tuple[Outcome, ScriptedCompleter, FakeClaims, Claim]:
    _, sink = flushes
    completer = ScriptedCompleter(scripts)
    claims = FakeClaims()
    runner = make_runner(sink, completer, claims=claims, retries=retries, max_attempts=max_attempts)
    claim = Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data=REQUEST)
    outcome = await runner.run(claim, message_id="m-1")
    return outcome, completer, claims, claim


def text_of(store: FakeFlushes, claim: Claim, attempt: int) -> str:
    items = store.items_for(claim.job_id)
    return "".join(item.delta for item in items if item.attempt == attempt)


async def test_a_transient_error_before_the_first_token_is_retried(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    outcome, completer, claims, claim = await run(
        flushes, [[ProviderUnavailable("503")], ["Hel", "lo"]]
    )
    assert outcome.ending is Ending.COMPLETED
    assert completer.calls == 2
    assert claims.calls == []  # the same attempt: no restart, attempts stays 1
    assert text_of(flushes[0], claim, 1) == "Hello"
    assert outcome.response_data is not None
    assert outcome.response_data["usage"]["completion_tokens"] == 2


async def test_a_permanent_error_fails_at_once(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    outcome, completer, _, _ = await run(flushes, [[AuthError("bad key")]])
    assert outcome.ending is Ending.FAILED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.AUTH
    assert completer.calls == 1


async def test_a_stream_broken_after_text_starts_the_attempt_over(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    outcome, completer, claims, claim = await run(
        flushes, [["par", "tial", StreamBroken("cut")], ["whole ", "answer"]]
    )
    assert outcome.ending is Ending.COMPLETED
    assert completer.calls == 2
    [(job_id, restart)] = claims.calls
    assert (job_id, restart) == (claim.job_id, claim.lease)
    assert text_of(flushes[0], claim, 2) == "whole answer"


async def test_broken_streams_fail_the_job_at_the_attempt_limit(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    outcome, _, claims, claim = await run(
        flushes, [["par", "tial", StreamBroken("cut")]], max_attempts=1
    )
    assert outcome.ending is Ending.FAILED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert claims.calls == []
    assert text_of(flushes[0], claim, 1) == "partial"


async def test_an_invalid_request_fails_without_calling_the_provider(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    _, sink = flushes
    completer = ScriptedCompleter([["never"]])
    runner = make_runner(sink, completer, claims=FakeClaims())
    claim = Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data={"x": 1})
    outcome = await runner.run(claim, message_id=None)
    assert outcome.ending is Ending.FAILED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.INVALID_REQUEST
    assert completer.calls == 0


async def test_reasoning_is_a_first_token_and_the_answer_ends_in_message_and_parts(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    script: Script = [
        ReasoningDelta("Think"),
        ReasoningDelta("ing."),
        "Hello",
        " there",
        ToolCallDelta(index=0, id="call_1", name="lookup", arguments='{"q": '),
        ToolCallDelta(index=1, id="call_2", name="clock"),
        ToolCallDelta(index=0, arguments='"x"}'),
    ]
    outcome, completer, _, claim = await run(flushes, [script])
    assert outcome.ending is Ending.COMPLETED
    assert completer.calls == 1
    data = outcome.response_data
    assert data is not None
    assert data["message"] == {
        "role": "assistant",
        "content": "Hello there",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": ""}},
        ],
        "reasoning_content": "Thinking.",
    }
    assert data["parts"] == [
        {"type": "reasoning", "text": "Thinking."},
        {"type": "text", "text": "Hello there"},
        {
            "type": "tool-lookup",
            "toolCallId": "call_1",
            "state": "input-available",
            "input": {"q": "x"},
        },
        {"type": "tool-clock", "toolCallId": "call_2", "state": "input-available", "input": {}},
    ]
    items = flushes[0].items_for(claim.job_id)
    assert "".join(i.delta for i in items) == "Hello there"
    assert "".join(i.reasoning or "" for i in items) == "Thinking."


async def test_a_content_filter_stop_fails_the_job_and_keeps_the_text(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    store, sink = flushes
    completer = ScriptedCompleter([["Some ", "text"]], finish_reason="content_filter")
    runner = make_runner(sink, completer, claims=FakeClaims())
    claim = Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data=REQUEST)
    outcome = await runner.run(claim, message_id=None)
    assert outcome.ending is Ending.FAILED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTENT_FILTERED
    assert outcome.response_data is not None
    assert outcome.response_data["finish_reason"] == "content_filter"
    assert text_of(store, claim, 1) == "Some text"


async def test_a_thinking_model_slower_than_the_first_token_timeout_is_not_retried(
    flushes: tuple[FakeFlushes, StreamWriter],
) -> None:
    _, sink = flushes

    class Thinker(ScriptedCompleter):
        async def stream(self, target, request):  # type: ignore[no-untyped-def]
            self.calls += 1
            yield Routed("fake")
            for _ in range(4):  # 0.4 s of reasoning, first token at once; timeout is 0.2 s
                yield ReasoningDelta("…")
                await asyncio.sleep(0.1)
            yield TextDelta("done")
            yield Answered(
                model="m",
                provider="fake",
                finish_reason="stop",
                usage=None,
                cost_usd=None,
                deployment="fake/m",
                model_id=None,
            )

    completer = Thinker([[]])
    runner = make_runner(sink, completer, claims=FakeClaims(), first_token_s=0.2)
    claim = Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data=REQUEST)
    outcome = await runner.run(claim, message_id=None)
    assert outcome.ending is Ending.COMPLETED
    assert completer.calls == 1
