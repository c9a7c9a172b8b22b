"""A request the LLM edge refuses when it opens the stream (a media URL it may not have
fetched) fails the job `invalid_request` at once: no retry, no provider call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tests.core.doubles import FakeClaims, FakeFlushes, ScriptedCompleter
from tests.core.test_runner import make_runner
from worker.errors import ErrorCode, InvalidRequest
from worker.jobs import Claim, Ending, JobRequest
from worker.llm.events import StreamEvent
from worker.llm.target import Target
from worker.writer import StreamWriter


@dataclass
class RefusingCompleter(ScriptedCompleter):
    """Completer.stream raises before it returns a stream, as the media policy does."""

    def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        raise InvalidRequest("invalid request_data: messages.0.content.1: not fetched")


async def test_a_refused_stream_fails_the_job_without_retrying() -> None:
    store = FakeFlushes()
    sink = StreamWriter(
        store, flush_interval_s=0.01, flush_max_chars=8192, content_refresh_s=0, lease_s=30
    )
    writing = asyncio.create_task(sink.run())
    completer = RefusingCompleter([["never"]])
    runner = make_runner(sink, completer, claims=FakeClaims())
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    claim = Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data=request)
    try:
        outcome = await runner.run(claim, message_id="m-1")
    finally:
        sink.close()
        await writing
    assert outcome.ending is Ending.FAILED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.INVALID_REQUEST
    assert outcome.error.message.endswith("messages.0.content.1: not fetched")
    assert completer.calls == 1
