"""The supervisor: receives as many messages as it has free slots and runs each job to its end.

Shutdown is one event. After it: the long poll is aborted, running jobs get the grace period,
then the rest are handed back (row to `pending`, message visible at once) for another worker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from worker import metrics
from worker.jobs import Claim, Delivery, Ending, Outcome
from worker.ports import Claims, Queue, Runner
from worker.queue import QueueUnavailable
from worker.slots import Slots
from worker.store import ClaimRefused, StoreUnavailable
from worker.waiting import unless_set

log = structlog.get_logger(__name__)
T = TypeVar("T")

# How long a job that outlived the grace period may take to hand itself back.
RELEASE_DEADLINE_S = 4.0
DRAIN_POLL_S = 1


class Disposition(StrEnum):
    """What became of one message (the `shutdown_complete` event counts them)."""

    COMPLETED = "completed"  # the job ended so (here, or before this delivery)
    FAILED = "failed"
    CANCELLED = "cancelled"
    POISON = "poison"  # a body that can never name a job: deleted
    MISSING = "missing"  # no row yet: shown again later, until the redrive policy gives up
    DEFERRED = "deferred"  # our own message came back while its attempt's lease runs
    DUPLICATE = "duplicate"  # another delivery runs the job: deleted
    LOST = "lost"  # another attempt took the job over
    HANDED_BACK = "released"  # shutdown outlived the grace: row `pending`, message visible
    CRASHED = "crashed"  # a bug; the message comes back for another try


_BY_ENDING = {
    Ending.COMPLETED: Disposition.COMPLETED,
    Ending.FAILED: Disposition.FAILED,
    Ending.CANCELLED: Disposition.CANCELLED,
    Ending.LOST: Disposition.LOST,
    Ending.HANDED_BACK: Disposition.HANDED_BACK,
}


class Mode(StrEnum):
    DAEMON = "daemon"  # until SIGTERM/SIGINT
    DRAIN = "drain"  # until the queue is empty and nothing is running
    ONCE = "once"  # at most one message


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    receive_wait_s: int
    visibility_timeout_s: int
    lease_s: float
    # Past this, a running job's message is no longer kept invisible (a wedged job's message
    # comes back and its lease decides who runs it).
    max_invisible_s: float
    # How often free slots look for jobs whose worker died (their lease ran out), to restart
    # them at once rather than when their message comes back; None: never.
    takeover_interval_s: float | None = None


class Supervisor:
    """Owns the receive loop, the running jobs' tasks, their visibility heartbeat, and the
    takeover of jobs whose worker died."""

    def __init__(
        self,
        *,
        queue: Queue,
        store: Claims,
        runner: Runner,
        slots: Slots,
        policy: QueuePolicy,
        shutdown_grace_s: float,
        mode: Mode = Mode.DAEMON,
    ) -> None:
        self._queue = queue
        self._store = store
        self._runner = runner
        self._slots = slots
        self._policy = policy
        self._grace_s = shutdown_grace_s
        self._mode = mode
        # Each running job's task, with the message it came by (None: taken over).
        self._running: dict[asyncio.Task[None], Delivery | None] = {}
        # Messages kept invisible by the heartbeat, with when each was received.
        self._invisible: dict[str, tuple[Delivery, float]] = {}
        self._stopping = asyncio.Event()
        self._taking_over = asyncio.Lock()
        self._last_takeover = float("-inf")  # due at once: a restarted worker looks first
        self._more_to_take_over = False
        self.outcomes: Counter[Disposition] = Counter()
        self.last_progress = time.monotonic()
        metrics.CONCURRENCY_LIMIT.set(slots.limit)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def is_alive(self, stall_limit_s: float) -> bool:
        """The receive loop went round recently, or is rightly waiting for a free slot."""
        full = self._slots.free <= 0
        return full or time.monotonic() - self.last_progress < stall_limit_s

    def stop(self) -> None:
        """Begin shutdown; safe to call from a signal handler and more than once."""
        self._stopping.set()

    async def run(self) -> Counter[Disposition]:
        """Receive and run jobs until the mode's end or `stop()`; returns outcome counts."""
        try:
            async with asyncio.TaskGroup() as housekeeping:
                beside = [housekeeping.create_task(self._extend_visibility())]
                if self._policy.takeover_interval_s is not None and self._mode is not Mode.ONCE:
                    beside.append(housekeeping.create_task(self._take_over_expired()))
                await self._receive_loop()
                for task in beside:
                    task.cancel()
                await self._finish_running()
        finally:
            # Reached with jobs still running only through an error or a cancellation: they
            # are this loop's tasks, so they are handed back and awaited here too.
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(list(self._running), timeout=RELEASE_DEADLINE_S)
        counts = {disposition.value: n for disposition, n in self.outcomes.items()}
        log.info("shutdown_complete", mode=self._mode.value, **counts)
        return self.outcomes

    async def _receive_loop(self) -> None:
        while not self.stopping:
            free = await self._until_stopped(self._free_slots())
            if free is None:
                return
            self.last_progress = time.monotonic()
            if self._takeover_due() or self._more_to_take_over:
                # Jobs whose worker died go first: they have waited longest, and with a
                # backlog no slot would ever stay free for the sweep beside this loop. While
                # a sweep finds more of them than slots, freed slots go to them, not to SQS.
                await self._take_over(free)
                free = self._slots.free
                if free <= 0 or self._more_to_take_over:
                    continue
            deliveries = await self._until_stopped(self._receive(free))
            if deliveries is None:
                return
            for index, delivery in enumerate(deliveries):
                if self._slots.free <= 0:
                    # Taken-over jobs filled the slots during the long poll: give it back.
                    for extra in deliveries[index:]:
                        await self._show_again(extra, seconds=0)
                    break
                self._start(delivery)
            if self._mode is Mode.ONCE or (
                self._mode is Mode.DRAIN and not deliveries and not self._running
            ):
                return

    async def _free_slots(self) -> int:
        return await self._slots.wait_free()

    async def _receive(self, free: int) -> list[Delivery]:
        """Receive, backing off while SQS is unreachable or throttling (running jobs go on)."""
        wanted = 1 if self._mode is Mode.ONCE else free
        # Draining, short polls: the queue counts as empty after one that finds nothing.
        wait_s = self._policy.receive_wait_s
        if self._mode is Mode.DRAIN:
            wait_s = min(wait_s, DRAIN_POLL_S)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(QueueUnavailable),
            wait=wait_exponential_jitter(multiplier=1, max=30),
            before_sleep=_log_receive_retry,
        ):
            with attempt:
                return await self._queue.receive(
                    wanted, wait_s=wait_s, visibility_timeout_s=self._policy.visibility_timeout_s
                )
        raise AssertionError("unreachable: retries until SQS answers or shutdown cancels")

    def _start(self, delivery: Delivery) -> None:
        self._invisible[delivery.receipt_handle] = (delivery, time.monotonic())
        self._track(self._handle(delivery), delivery, name=f"job-{delivery.message_id}")

    def _track(self, work: Coroutine[Any, Any, None], delivery: Delivery | None, name: str) -> None:
        self._slots.take()
        task = asyncio.create_task(work, name=name)
        self._running[task] = delivery
        metrics.JOBS_IN_FLIGHT.set(len(self._running))
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        delivery = self._running.pop(task, None)
        if delivery is not None:
            self._invisible.pop(delivery.receipt_handle, None)
        metrics.JOBS_IN_FLIGHT.set(len(self._running))
        self._slots.give_back()

    async def _take_over_expired(self) -> None:
        """Restart, in free slots, jobs whose lease ran out: their worker died (kill -9, an
        OOM kill). Without this they would wait for their message to come back, a whole
        visibility timeout. Their message, when it does, finds them running and is deleted.

        The receive loop takes over too, before it receives, when a sweep is due; this loop
        covers a worker idle in a long poll. Both look at once when the worker starts."""
        assert self._policy.takeover_interval_s is not None
        while True:
            if self._takeover_due() and not self.stopping:
                await self._take_over(self._slots.free)
            await asyncio.sleep(self._policy.takeover_interval_s / 2)

    def _takeover_due(self) -> bool:
        interval = self._policy.takeover_interval_s
        if interval is None or self._mode is Mode.ONCE:
            return False
        return time.monotonic() - self._last_takeover >= interval

    async def _take_over(self, free: int) -> None:
        async with self._taking_over:  # the two callers never claim the same slots twice
            self._last_takeover = time.monotonic()
            free = min(free, self._slots.free)
            if free <= 0:
                return
            try:
                claims = await self._store.take_over(free, lease_s=self._policy.lease_s)
            except StoreUnavailable as error:
                log.warning("takeover_failed", error=str(error))
                return
            # Every slot asked for was used: there may be more waiting.
            self._more_to_take_over = len(claims) == free
            for claim in claims:
                self._track(self._handle_taken(claim), None, name=f"job-{claim.job_id}")

    async def _handle_taken(self, claim: Claim) -> None:
        structlog.contextvars.bind_contextvars(job_id=str(claim.job_id), message_id=None)
        metrics.JOBS_TAKEN_OVER.inc()
        log.info("job_taken_over", attempt=claim.attempt)

        async def run() -> Disposition:
            return self._ended(await self._runner.run(claim, message_id=None))

        async def send_message() -> None:
            # It came by no message: the handed-back job needs one to be found again.
            try:
                await self._queue.send(claim.job_id)
            except QueueUnavailable as error:
                log.warning("message_send_failed", error=str(error))

        await self._counted(run(), send_message)

    async def _finish_running(self) -> None:
        """Wait for running jobs; once stopping, only for the grace period, then hand back."""
        if not self._running:
            return
        if not self.stopping:
            await self._until_stopped(asyncio.wait(list(self._running)))
        if self._running:
            await asyncio.wait(list(self._running), timeout=self._grace_s)
        for task in self._running:
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running), timeout=RELEASE_DEADLINE_S)

    async def _handle(self, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=delivery.message_id,
            receive_count=delivery.receive_count,
            job_id=None if delivery.job_id is None else str(delivery.job_id),
        )
        await self._counted(self._process(delivery), lambda: self._show_again(delivery, seconds=0))

    async def _counted(
        self, work: Awaitable[Disposition], hand_back: Callable[[], Awaitable[None]]
    ) -> None:
        """Count what became of a job; cancelled (a shutdown), `hand_back` lets it be found
        again. A bug must not take the daemon down: the job comes back for another try."""
        try:
            self.outcomes[await work] += 1
        except asyncio.CancelledError:
            self.outcomes[Disposition.HANDED_BACK] += 1
            metrics.JOBS_RELEASED.inc()
            await hand_back()
            log.info("job_released")
            raise
        except Exception:
            self.outcomes[Disposition.CRASHED] += 1
            log.exception("job_crashed")

    async def _process(self, delivery: Delivery) -> Disposition:
        """Claim and run the job a message names; returns the outcome's name for counting."""
        if delivery.job_id is None:
            metrics.POISON_MESSAGES.labels(delivery.poison_reason or "unknown").inc()
            log.warning("poison_message", reason=delivery.poison_reason)
            await self._delete(delivery)
            return Disposition.POISON
        claim = await self._store.claim(
            delivery.job_id, message_id=delivery.message_id, lease_s=self._policy.lease_s
        )
        if isinstance(claim, ClaimRefused):
            return await self._refused(delivery, claim)
        queue_wait_s = _queue_wait_s(delivery)
        if queue_wait_s is not None:
            metrics.QUEUE_WAIT.observe(queue_wait_s)
        log.info("job_claimed", attempt=claim.attempt, queue_wait_s=queue_wait_s)
        outcome = await self._runner.run(claim, message_id=delivery.message_id)
        return await self._after(delivery, outcome)

    async def _refused(self, delivery: Delivery, refusal: ClaimRefused) -> Disposition:
        if not refusal.exists:
            # The row may still be committing: try again soon, until the redrive policy gives up.
            seconds = min(5 * delivery.receive_count, 60)
            metrics.MESSAGES_DEFERRED.labels("no_row").inc()
            log.info("job_row_missing", retry_in_s=seconds)
            await self._show_again(delivery, seconds=seconds)
            return Disposition.MISSING
        if refusal.status is not None and refusal.status.is_terminal:
            log.info("job_already_ended", status=refusal.status.value)
            await self._delete(delivery)
            return Disposition(refusal.status.value)
        if refusal.leased_by_message == delivery.message_id:
            # Our own message came back while its attempt's lease still runs: that worker
            # may be dead, so look again once the lease has expired.
            seconds = int(refusal.lease_left_s) + 1
            metrics.MESSAGES_DEFERRED.labels("lease_held").inc()
            await self._show_again(delivery, seconds=seconds)
            return Disposition.DEFERRED
        log.info("duplicate_delivery")
        await self._delete(delivery)
        return Disposition.DUPLICATE

    async def _after(self, delivery: Delivery, outcome: Outcome) -> Disposition:
        if outcome.ending is not Ending.LOST:
            await self._delete(delivery)
        return self._ended(outcome)

    def _ended(self, outcome: Outcome) -> Disposition:
        if outcome.ending is Ending.LOST:
            log.warning("lease_lost")
            return Disposition.LOST
        error = outcome.error
        log.info(
            f"job_{outcome.ending.value}",  # job_completed, job_failed, job_cancelled
            error_code=None if error is None else error.code.value,
            error=None if error is None else error.message,
        )
        return _BY_ENDING[outcome.ending]

    async def _delete(self, delivery: Delivery) -> None:
        self._invisible.pop(delivery.receipt_handle, None)
        try:
            await self._queue.delete(delivery)
        except QueueUnavailable as error:
            # The row is the truth: the message comes back and is then seen to be done.
            log.warning("message_delete_failed", error=str(error))

    async def _show_again(self, delivery: Delivery, *, seconds: int) -> None:
        """Make the message visible again in `seconds` (0: now) for this or another worker."""
        self._invisible.pop(delivery.receipt_handle, None)
        try:
            await self._queue.set_visibility(delivery, seconds=seconds)
        except QueueUnavailable as error:
            # It still comes back, only later: when its visibility timeout runs out.
            log.warning("message_retime_failed", error=str(error))

    async def _extend_visibility(self) -> None:
        """Keep running jobs' messages invisible, a third of the timeout ahead, in batches."""
        timeout_s = self._policy.visibility_timeout_s
        while True:
            await asyncio.sleep(timeout_s / 3)
            oldest = time.monotonic() - self._policy.max_invisible_s
            deliveries = [d for d, since in self._invisible.values() if since > oldest]
            if deliveries:
                try:
                    await self._queue.extend(deliveries, seconds=timeout_s)
                except QueueUnavailable as error:
                    log.warning("visibility_extend_failed", error=str(error))

    async def _until_stopped(self, work: Awaitable[T]) -> T | None:
        """Await `work` unless shutdown begins first, in which case cancel it and return None."""
        return await unless_set(self._stopping, work)


def _log_receive_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("receive_failed", error=str(error), failures=state.attempt_number)


def _queue_wait_s(delivery: Delivery) -> float | None:
    if delivery.sent_at_s is None:
        return None
    return round(max(time.time() - delivery.sent_at_s, 0.0), 3)
