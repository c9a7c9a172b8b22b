"""The debounced writer: collects the new text (and reasoning) of every running job and commits
it in batches.

Appending never awaits the database. One task flushes every `flush_interval_s` (or sooner
when a job's buffer passes `flush_max_chars`) with one statement for all jobs; a flush that
fails is retried as the very same batch, which the store's fencing makes exactly-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from worker import metrics
from worker.jobs import Claim, Outcome, Status
from worker.ports import Flushes
from worker.store import FlushItem, FlushResult, StoreUnavailable

log = structlog.get_logger(__name__)
T = TypeVar("T")

# How often a job without new text is looked at anyway (contract: cancel noticed within 2 s).
IDLE_CHECK_S = 1.0
# A job's first text is flushed this soon after it arrives (gathering other jobs' first text
# meanwhile), and such early flushes are at least this far apart: at most 10 a second.
FIRST_TEXT_COALESCE_S = 0.005
FIRST_TEXT_GAP_S = 0.1


class JobStopped(Exception):
    """The row says stop: the app cancelled the job, or another attempt took it over."""

    def __init__(self, refusal: FlushResult) -> None:
        self.cancelled = refusal.cancelled
        super().__init__("cancelled by the app" if self.cancelled else "lease lost")


@dataclass(eq=False)
class JobBuffer:
    """One attempt's text and reasoning on their way to the database; only the job's own
    task appends."""

    claim: Claim
    max_chars: int
    wake_writer: Callable[[], None]
    first_text: Callable[[], None]
    seq: int = 0  # the last delta committed
    content_seq: int = 0  # the last delta whose text and reasoning the row holds
    pending: list[str] = field(default_factory=list)
    pending_reasoning: list[str] = field(default_factory=list)
    pending_chars: int = 0
    pending_since: float | None = None
    unrefreshed: list[str] = field(default_factory=list)
    unrefreshed_reasoning: list[str] = field(default_factory=list)
    unrefreshed_since: float | None = None
    last_seen: float = field(default_factory=time.monotonic)
    last_renewed: float = field(default_factory=time.monotonic)
    outcome: Outcome | None = None
    finished: asyncio.Future[FlushResult] | None = None
    refusal: FlushResult | None = None
    _task: asyncio.Task[Any] | None = None
    _cancelling: bool = False

    @property
    def streaming(self) -> bool:
        """The row says `streaming`: the first delta committed with that status."""
        return self.seq > 0

    def append(self, text: str) -> None:
        if text:
            self._add(self.pending, text)

    def append_reasoning(self, text: str) -> None:
        if text:
            self._add(self.pending_reasoning, text)

    def _add(self, pending: list[str], text: str) -> None:
        if self.pending_since is None:
            self.pending_since = time.monotonic()
            if self.seq == 0:
                self.first_text()  # the first words are what a chat user waits for
        pending.append(text)
        self.pending_chars += len(text)
        if self.pending_chars >= self.max_chars:
            self.wake_writer()

    def tail(self) -> FlushItem:
        """Everything not yet committed, as the next delta and a refresh of the row's text:
        how a job the app cancelled catches up as it stops."""
        delta, reasoning = self.take_pending()
        return self.item(delta, reasoning, refreshing=True)

    def take_pending(self) -> tuple[str, str | None]:
        """The text and reasoning appended since the last flush took them."""
        delta, reasoning = "".join(self.pending), "".join(self.pending_reasoning) or None
        self.pending, self.pending_reasoning = [], []
        self.pending_chars, self.pending_since = 0, None
        return delta, reasoning

    def item(
        self,
        delta: str,
        reasoning: str | None,
        *,
        refreshing: bool,
        outcome: Outcome | None = None,
        status: Status | None = None,
        renew: bool = False,
    ) -> FlushItem:
        """The next flush's share for this job: its new text as delta `seq + 1`, and, when
        `refreshing`, everything the row's text does not hold yet."""
        refresh = refresh_reasoning = None
        if refreshing:
            refresh = "".join(self.unrefreshed) + delta
            refresh_reasoning = "".join(self.unrefreshed_reasoning) + (reasoning or "") or None
        error = None if outcome is None else outcome.error
        return FlushItem(
            job_id=self.claim.job_id,
            lease=self.claim.lease,
            attempt=self.claim.attempt,
            seq=self.seq + 1 if delta or reasoning else self.seq,
            delta=delta,
            reasoning=reasoning,
            refresh=refresh,
            refresh_reasoning=refresh_reasoning,
            refresh_from=self.content_seq,
            status=status,
            response_data=None if outcome is None else outcome.response_data,
            error_code=None if error is None else error.code.value,
            error_message=None if error is None else error.message,
            renew=renew,
        )

    @contextlib.asynccontextmanager
    async def stoppable(self) -> AsyncIterator[None]:
        """Run a block the row can stop: its cancellation by the writer becomes JobStopped."""
        self._task = asyncio.current_task()
        try:
            if self.refusal is not None:
                raise JobStopped(self.refusal)
            yield
        except asyncio.CancelledError:
            if self._cancelling and self._task is not None and self._task.uncancel() == 0:
                assert self.refusal is not None
                raise JobStopped(self.refusal) from None
            raise
        finally:
            self._task = None

    def refuse(self, refusal: FlushResult) -> None:
        """The database refused a write: stop the job's block and release `finish` waiters."""
        if self.refusal is not None:
            return
        self.refusal = refusal
        if self._task is not None:
            self._cancelling = True
            self._task.cancel()
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(refusal)


@dataclass(frozen=True, slots=True)
class _Taken:
    buffer: JobBuffer
    item: FlushItem
    text_since: float | None


class StreamWriter:
    """Owns every running job's buffer and the single task that flushes them."""

    def __init__(
        self,
        store: Flushes,
        *,
        flush_interval_s: float,
        flush_max_chars: int,
        content_refresh_s: float,
        lease_s: float,
    ) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._max_chars = flush_max_chars
        self._refresh_s = content_refresh_s
        self._lease_s = lease_s
        # By lease, not job id: a restarted job's old and new attempts must never be confused.
        self._buffers: dict[uuid.UUID, JobBuffer] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False
        self._early = False
        self._full = False
        self._flushed_at = 0.0

    def open(self, claim: Claim) -> JobBuffer:
        buffer = JobBuffer(
            claim=claim,
            max_chars=self._max_chars,
            wake_writer=self._buffer_full,
            first_text=self._first_text_arrived,
        )
        self._buffers[claim.lease] = buffer
        return buffer

    async def finish(self, buffer: JobBuffer, outcome: Outcome) -> FlushResult:
        """Queue the attempt's last write (text, status, response) and wait for its commit."""
        assert outcome.ending.row_status is not None, "a lost attempt writes nothing"
        if buffer.refusal is not None:
            return buffer.refusal
        if self._stopped:
            raise StoreUnavailable("the writer has stopped")
        buffer.outcome = outcome
        buffer.finished = asyncio.get_running_loop().create_future()
        return await asyncio.shield(buffer.finished)

    async def settle_cancelled(self, buffer: JobBuffer, response_data: dict[str, Any]) -> None:
        """The app cancelled the job: commit the text streamed so far, fill in the ending."""
        tail = buffer.tail()
        await self._retrying(lambda: self._store.settle_cancelled(tail, response_data))

    def discard(self, buffer: JobBuffer) -> None:
        self._buffers.pop(buffer.claim.lease, None)

    async def run(self) -> None:
        """Flush until `close()`; the flush after it writes whatever is left.

        Flushes start on a fixed beat, not an interval after the last one ended: text then
        waits at most one interval plus one commit, however long the commits take.
        """
        loop = asyncio.get_running_loop()
        beat = loop.time() + self._interval_s
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(beat):
                        await self._wake.wait()
                self._wake.clear()
                if self._early and not self._closing:
                    # A job's first text: flush it soon rather than at the next beat, but
                    # at most once per FIRST_TEXT_GAP_S, so that many jobs starting at
                    # once share their early flushes.
                    gap = self._flushed_at + FIRST_TEXT_GAP_S - loop.time()
                    await asyncio.sleep(max(FIRST_TEXT_COALESCE_S, gap))
                # Before the beat, an early flush writes only the jobs' first text: the others'
                # text keeps its beat, so that early flushes stay small.
                first_only = self._early and not self._full and loop.time() < beat
                self._early = self._full = False
                closing = self._closing
                self._flushed_at = loop.time()
                await self.flush(first_only=first_only and not closing)
                if closing:
                    return
                if loop.time() >= beat:  # only a beat moves the beat: early flushes are extra
                    beat = max(beat + self._interval_s, loop.time())
        finally:
            # Nothing will commit a job's last write any more: its waiter must not wait on.
            self._stopped = True
            for buffer in self._buffers.values():
                if buffer.finished is not None and not buffer.finished.done():
                    buffer.finished.set_exception(StoreUnavailable("the writer has stopped"))

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def _buffer_full(self) -> None:
        self._full = True
        self._wake.set()

    def _first_text_arrived(self) -> None:
        self._early = True
        self._wake.set()

    async def flush(self, *, first_only: bool = False) -> None:
        now = time.monotonic()
        batch = [
            self._take(buffer, now)
            for buffer in self._buffers.values()
            if (
                buffer.seq == 0 and buffer.pending_chars > 0
                if first_only
                else self._due(buffer, now)
            )
        ]
        if not batch:
            return
        if first_only:
            metrics.EARLY_FLUSHES.inc()
        started = time.perf_counter()
        items = [taken.item for taken in batch]
        results = await self._retrying(
            lambda: self._store.write_flush(items, lease_s=self._lease_s)
        )
        metrics.observe_flush(seconds=time.perf_counter() - started, rows=len(batch))
        committed = time.monotonic()
        for taken, result in zip(batch, results, strict=True):
            self._settle(taken, result, committed)

    def _due(self, buffer: JobBuffer, now: float) -> bool:
        # A job with nothing new still joins a flush every second, read-only: that is how a
        # job waiting for its first token (or stalled) learns the app cancelled it.
        return (
            buffer.pending_chars > 0
            or buffer.outcome is not None
            or now - buffer.last_seen >= IDLE_CHECK_S
        )

    def _take(self, buffer: JobBuffer, now: float) -> _Taken:
        text_since = buffer.pending_since
        delta, reasoning = buffer.take_pending()
        new = bool(delta or reasoning)
        if new and buffer.unrefreshed_since is None:
            buffer.unrefreshed_since = text_since
        outcome = buffer.outcome
        status = outcome.ending.row_status if outcome is not None else None
        if status is None and new and not buffer.streaming:
            status = Status.STREAMING  # the first token of any kind shows with the first flush
        item = buffer.item(
            delta,
            reasoning,
            refreshing=outcome is not None or self._refresh_due(buffer, now),
            outcome=outcome,
            status=status,
            renew=now - buffer.last_renewed >= self._lease_s / 3,
        )
        return _Taken(buffer=buffer, item=item, text_since=text_since)

    def _refresh_due(self, buffer: JobBuffer, now: float) -> bool:
        # Refresh now if waiting for the next flush would leave the oldest text missing from
        # `partial_content` staler than `content_refresh_s`.
        since = buffer.unrefreshed_since
        return since is not None and now + self._interval_s >= since + self._refresh_s

    def _settle(self, taken: _Taken, result: FlushResult, committed: float) -> None:
        buffer, item = taken.buffer, taken.item
        if not result.applied:
            # Its text goes back, first: a job the app cancelled still commits it (`tail`).
            buffer.pending.insert(0, item.delta)
            if item.reasoning is not None:
                buffer.pending_reasoning.insert(0, item.reasoning)
            self._buffers.pop(buffer.claim.lease, None)
            buffer.refuse(result)
            return
        buffer.seq = item.seq
        buffer.last_seen = committed
        if item.renew:
            buffer.last_renewed = committed
        if taken.text_since is not None:
            metrics.observe_visibility_lag(committed - taken.text_since)
        if item.refresh is not None:
            buffer.content_seq = item.seq
            buffer.unrefreshed.clear()
            buffer.unrefreshed_reasoning.clear()
            buffer.unrefreshed_since = None
        else:
            if item.delta:
                buffer.unrefreshed.append(item.delta)
            if item.reasoning is not None:
                buffer.unrefreshed_reasoning.append(item.reasoning)
        if item.status is not None and item.status is not Status.STREAMING:
            self._buffers.pop(buffer.claim.lease, None)
            if buffer.finished is not None and not buffer.finished.done():
                buffer.finished.set_result(result)

    async def _retrying(self, write: Callable[[], Awaitable[T]]) -> T:
        """Retry the very same write until it commits: the fencing makes that exactly-once.

        Any error, not only a lost connection: the writer is the one task every job's text
        goes through, and a writer that died would leave every job waiting for its commit.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=0.1, max=5),
            before_sleep=_log_store_retry,
            reraise=True,
        ):
            with attempt:
                return await write()
        raise AssertionError("unreachable: retries until the store answers")


def _first_text(buffer: JobBuffer) -> bool:
    """The buffer holds its job's first text (or reasoning), not yet committed."""
    return buffer.seq == 0 and buffer.pending_chars > 0


def _log_store_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    if isinstance(error, StoreUnavailable):
        log.warning("store_unavailable", retry=state.attempt_number, error=str(error))
    else:
        log.error("flush_error", retry=state.attempt_number, exc_info=error)
