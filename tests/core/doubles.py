"""In-process stand-ins for the core's edges (worker/ports.py): a queue, a store, a runner and
an LLM, each scripted by the test and recording what the core asked of it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.errors import JobError
from worker.jobs import Claim, Delivery, Ending, JobRequest, Outcome, Status, Usage
from worker.llm.events import Answered, Routed, StreamEvent, TextDelta
from worker.llm.target import Target
from worker.store import ClaimRefused, FlushItem, FlushResult, StoreUnavailable


def delivery(job_id: uuid.UUID | None = None, *, receive_count: int = 1) -> Delivery:
    message_id = f"m-{uuid.uuid4().hex[:8]}"
    return Delivery(
        message_id=message_id,
        receipt_handle=f"rh-{message_id}",
        receive_count=receive_count,
        sent_at_s=None,
        job_id=job_id,
        poison_reason=None if job_id is not None else "not_json",
    )


def claim_for(job_id: uuid.UUID, *, attempt: int = 1) -> Claim:
    return Claim(job_id=job_id, attempt=attempt, lease=uuid.uuid4(), request_data={})


@dataclass
class FakeQueue:
    """Hands out `inbox` in receives; records deletes and visibility changes."""

    inbox: list[Delivery] = field(default_factory=list)
    deleted: list[Delivery] = field(default_factory=list)
    shown_again: list[tuple[Delivery, int]] = field(default_factory=list)
    extended: list[Delivery] = field(default_factory=list)
    sent: list[uuid.UUID] = field(default_factory=list)

    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[Delivery]:
        await asyncio.sleep(0)
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        return taken

    async def delete(self, delivery: Delivery) -> None:
        self.deleted.append(delivery)

    async def set_visibility(self, delivery: Delivery, *, seconds: int) -> None:
        self.shown_again.append((delivery, seconds))

    async def extend(self, deliveries: Sequence[Delivery], *, seconds: int) -> None:
        self.extended.extend(deliveries)

    async def send(self, job_id: uuid.UUID) -> None:
        self.sent.append(job_id)


@dataclass
class FakeClaims:
    """Claims by job id: a refusal where the test put one, else a fresh attempt."""

    refusals: dict[uuid.UUID, ClaimRefused] = field(default_factory=dict)
    calls: list[tuple[uuid.UUID, uuid.UUID | None]] = field(default_factory=list)
    attempts: dict[uuid.UUID, int] = field(default_factory=dict)
    # Jobs whose lease ran out, for `take_over` to hand out; and how many each call asked.
    expired: list[uuid.UUID] = field(default_factory=list)
    takeover_limits: list[int] = field(default_factory=list)

    async def claim(
        self,
        job_id: uuid.UUID,
        *,
        message_id: str | None,
        lease_s: float,
        restart: uuid.UUID | None = None,
    ) -> Claim | ClaimRefused:
        self.calls.append((job_id, restart))
        if job_id in self.refusals:
            return self.refusals[job_id]
        # A restart is the second attempt at least: the first was claimed before the runner.
        first = 1 if restart is not None else 0
        attempt = self.attempts[job_id] = self.attempts.get(job_id, first) + 1
        return claim_for(job_id, attempt=attempt)

    async def take_over(self, limit: int, *, lease_s: float) -> list[Claim]:
        self.takeover_limits.append(limit)
        taken, self.expired = self.expired[:limit], self.expired[limit:]
        return [claim_for(job_id, attempt=2) for job_id in taken]


@dataclass
class ScriptedRunner:
    """Ends each job as `endings` says (COMPLETED by default), after `gate` opens."""

    endings: dict[uuid.UUID, Ending | Exception] = field(default_factory=dict)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    most_running: int = 0
    started: list[uuid.UUID] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    async def wait_started(self, count: int) -> None:
        while len(self.started) < count:
            self._changed.clear()
            await self._changed.wait()

    async def wait_running(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.running < count:
                self._changed.clear()
                await self._changed.wait()

    async def run(self, claim: Claim, *, message_id: str | None) -> Outcome:
        self.started.append(claim.job_id)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self._changed.set()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        ending = self.endings.get(claim.job_id, Ending.COMPLETED)
        if isinstance(ending, Exception):
            raise ending
        return Outcome(ending)


@dataclass
class FakeFlushes:
    """Applies every flush item unless `refuse` names its job; can fail the next writes."""

    batches: list[list[FlushItem]] = field(default_factory=list)
    refuse: dict[uuid.UUID, Status] = field(default_factory=dict)
    fail_next: int = 0
    fail_with: Exception | None = None
    settled: list[tuple[FlushItem, dict[str, Any]]] = field(default_factory=list)
    written: asyncio.Event = field(default_factory=asyncio.Event)

    async def write_flush(self, items: Sequence[FlushItem], *, lease_s: float) -> list[FlushResult]:
        self.batches.append(list(items))
        self.written.set()
        if self.fail_next:
            self.fail_next -= 1
            raise self.fail_with or StoreUnavailable("connection lost")
        return [
            FlushResult(
                job_id=item.job_id,
                applied=item.job_id not in self.refuse,
                status=self.refuse.get(item.job_id, Status.STREAMING),
                leased=True,
            )
            for item in items
        ]

    async def settle_cancelled(self, tail: FlushItem, response_data: dict[str, Any]) -> None:
        self.settled.append((tail, response_data))

    def items_for(self, job_id: uuid.UUID) -> list[FlushItem]:
        return [item for batch in self.batches for item in batch if item.job_id == job_id]


Script = list[str | JobError | StreamEvent]


@dataclass
class ScriptedCompleter:
    """Streams each call's script: text pieces, and a JobError where the stream fails."""

    scripts: list[Script]
    calls: int = 0
    finish_reason: str = "stop"
    thinking_blocks: tuple[dict[str, Any], ...] = ()
    # The provider's own limit (models-file max_parallel_requests), where the test sets one.
    limit: asyncio.Semaphore | None = None
    model_timeouts: tuple[float | None, float | None] = (None, None)

    def resolve(self, request: JobRequest) -> Target:
        return Target(model=request.model, routed=True)

    @contextlib.asynccontextmanager
    async def _permit(self) -> AsyncIterator[None]:
        if self.limit is None:
            yield
            return
        async with self.limit:
            yield

    def permit(self, target: Target) -> contextlib.AbstractAsyncContextManager[None]:
        return self._permit()

    async def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        script = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        yield Routed("fake")
        for piece in script:
            await asyncio.sleep(0)
            if isinstance(piece, JobError):
                raise piece
            yield TextDelta(piece) if isinstance(piece, str) else piece
        yield Answered(
            model=target.model,
            provider="fake",
            finish_reason=self.finish_reason,
            usage=Usage(prompt_tokens=3, completion_tokens=len(script)),
            cost_usd=None,
            deployment=f"fake/{target.model}",
            model_id=None,
            thinking_blocks=self.thinking_blocks,
        )

    def count_tokens(self, target: Target, request: JobRequest, answer: str) -> Usage:
        return Usage(prompt_tokens=0, completion_tokens=len(answer.split()))

    def cost_usd(
        self, target: Target, usage: Usage, *, answered: Answered | None = None
    ) -> float | None:
        return None

    def called(self, target: Target) -> tuple[str, str | None]:
        return f"fake/{target.model}", "fake"

    def timeouts(self, target: Target) -> tuple[float | None, float | None]:
        return self.model_timeouts
