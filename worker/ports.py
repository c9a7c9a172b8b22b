"""The edges the core uses, as small Protocols: the supervisor, runner and writer depend on
these, so their logic runs in-process against fakes (tests/core) as well as for real.

The real ones: `JobQueue` (worker/queue.py, SQS), `JobStore` (worker/store.py, PostgreSQL),
`Completer` (worker/llm, LiteLLM) and `StreamWriter` (worker/writer.py) as the runner's sink.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from worker.jobs import Claim, Delivery, JobRequest, Outcome, Usage
from worker.llm.events import Answered, StreamEvent
from worker.llm.target import Target
from worker.store import ClaimRefused, FlushItem, FlushResult


class Queue(Protocol):
    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[Delivery]: ...

    async def delete(self, delivery: Delivery) -> None: ...

    async def set_visibility(self, delivery: Delivery, *, seconds: int) -> None: ...

    async def extend(self, deliveries: Sequence[Delivery], *, seconds: int) -> None: ...

    async def send(self, job_id: uuid.UUID) -> None: ...


class Claims(Protocol):
    """The store as the supervisor and runner see it."""

    async def claim(
        self,
        job_id: uuid.UUID,
        *,
        message_id: str | None,
        lease_s: float,
        restart: uuid.UUID | None = None,
    ) -> Claim | ClaimRefused: ...

    async def take_over(self, limit: int, *, lease_s: float) -> list[Claim]: ...


class Flushes(Protocol):
    """The store as the writer sees it."""

    async def write_flush(
        self, items: Sequence[FlushItem], *, lease_s: float
    ) -> list[FlushResult]: ...

    async def settle_cancelled(self, tail: FlushItem, response_data: dict[str, Any]) -> None: ...


class Completer(Protocol):
    def resolve(self, request: JobRequest) -> Target: ...

    def permit(self, target: Target) -> contextlib.AbstractAsyncContextManager[None]: ...

    def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]: ...

    def count_tokens(self, target: Target, request: JobRequest, answer: str) -> Usage: ...

    def cost_usd(
        self, target: Target, usage: Usage, *, answered: Answered | None = None
    ) -> float | None: ...

    def called(self, target: Target) -> tuple[str, str | None]: ...

    def timeouts(self, target: Target) -> tuple[float | None, float | None]: ...


class Runner(Protocol):
    """Runs a claimed job to its outcome (worker/runner.py)."""

    async def run(self, claim: Claim, *, message_id: str | None) -> Outcome: ...


class Buffer(Protocol):
    """One attempt's text on its way to the row."""

    @property
    def claim(self) -> Claim: ...

    def append(self, text: str) -> None: ...

    def append_reasoning(self, text: str) -> None: ...

    def stoppable(self) -> contextlib.AbstractAsyncContextManager[None]: ...


BufferT = TypeVar("BufferT", bound=Buffer)


class Sink(Protocol[BufferT]):
    """Where the runner writes an attempt's text and its end."""

    def open(self, claim: Claim) -> BufferT: ...

    async def finish(self, buffer: BufferT, outcome: Outcome) -> FlushResult: ...

    async def settle_cancelled(self, buffer: BufferT, response_data: dict[str, Any]) -> None: ...

    def discard(self, buffer: BufferT) -> None: ...
