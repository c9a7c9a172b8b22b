"""Running one claimed job: request → model → stream (with retries and timeouts) → outcome."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter

from worker import metrics
from worker.answer import Progress, response_data
from worker.errors import (
    ContentFiltered,
    InternalError,
    JobError,
    ProviderTimeout,
    RateLimited,
    StreamBroken,
    TransientError,
)
from worker.jobs import Claim, Ending, JobRequest, Outcome, Status, parse_request
from worker.llm.events import (
    Answered,
    ReasoningDelta,
    RefusalDelta,
    Routed,
    TextDelta,
    ToolCallDelta,
)
from worker.llm.target import Target
from worker.ports import Buffer, Claims, Completer, Sink
from worker.slots import Slots
from worker.store import ClaimRefused
from worker.writer import JobStopped

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_token_s: float
    stall_s: float
    job_s: float


class _TextArrived(Exception):
    """Marks a transient failure after text: the attempt restarts instead of retrying."""

    def __init__(self, cause: JobError) -> None:
        super().__init__(cause.message)
        self.cause = cause


@dataclass(frozen=True, slots=True)
class _Job:
    """What every attempt of one job shares."""

    target: Target
    request: JobRequest
    message_id: str | None
    started: float  # the claim
    timeouts: Timeouts  # the worker's, or the model's own where the models file sets them


class JobRunner:
    """Runs claimed jobs to an outcome, writing their text through the writer."""

    def __init__(
        self,
        *,
        store: Claims,
        writer: Sink[Any],
        llm: Completer,
        slots: Slots,
        timeouts: Timeouts,
        provider_retries: int,
        max_attempts: int,
        lease_s: float,
    ) -> None:
        self._store = store
        self._writer = writer
        self._llm = llm
        self._slots = slots
        self._timeouts = timeouts
        self._provider_retries = provider_retries
        self._max_attempts = max_attempts
        self._lease_s = lease_s

    async def run(self, claim: Claim, *, message_id: str | None) -> Outcome:
        """Run the job; cancelling this coroutine hands the job back (status `pending`)."""
        started = time.monotonic()
        structlog.contextvars.bind_contextvars(attempt=claim.attempt)
        try:
            request, target = self._prepare(claim)
        except JobError as error:
            failed = Outcome(
                Ending.FAILED,
                error=error,
                response_data=response_data(
                    model=None,
                    provider=None,
                    finish_reason=None,
                    usage=None,
                    cost_usd=None,
                    progress=None,
                    started=started,
                    attempts=claim.attempt,
                ),
            )
            outcome = await self._end(self._writer.open(claim), failed)
            _record(outcome, model_label="none", started=started)
            return outcome
        structlog.contextvars.bind_contextvars(model=target.model, model_label=target.label)
        total_s, silence_s = self._llm.timeouts(target)
        timeouts = Timeouts(
            first_token_s=silence_s or self._timeouts.first_token_s,
            stall_s=silence_s or self._timeouts.stall_s,
            job_s=total_s or self._timeouts.job_s,
        )
        job = _Job(
            target=target,
            request=request,
            message_id=message_id,
            started=started,
            timeouts=timeouts,
        )
        outcome = await self._attempts(claim, job)
        _record(outcome, model_label=target.label, started=started)
        return outcome

    def _prepare(self, claim: Claim) -> tuple[JobRequest, Target]:
        if claim.attempt > self._max_attempts:
            # Its workers kept vanishing mid-job (a crash, an OOM kill): stop trying.
            starts = claim.attempt - 1
            raise InternalError(f"the job was started {starts} times and never finished")
        request = parse_request(claim.request_data)
        target = self._llm.resolve(request)
        if request.ignored_options:
            log.warning("options_ignored", options=list(request.ignored_options))
        return request, target

    async def _attempts(self, claim: Claim, job: _Job) -> Outcome:
        """Attempt after attempt until an outcome: a broken stream starts over from empty text."""
        while True:
            buffer = self._writer.open(claim)
            progress = Progress()
            try:
                outcome = await self._attempt(buffer, job, progress)
            except _TextArrived as broken:
                metrics.ATTEMPTS_RESTARTED.labels(job.target.label).inc()
                restarted = await self._restart(buffer, job, progress, broken.cause)
                if isinstance(restarted, Outcome):
                    return restarted
                claim = restarted
                structlog.contextvars.bind_contextvars(attempt=claim.attempt)
                continue
            except asyncio.CancelledError:
                await self._writer.finish(buffer, Outcome(Ending.HANDED_BACK))
                raise
            return await self._end(buffer, outcome)

    async def _attempt(self, buffer: Buffer, job: _Job, progress: Progress) -> Outcome:
        deadline = job.started + job.timeouts.job_s
        try:
            # The provider's slot is awaited outside the first-token timeout: a job queued
            # behind its provider's limit waits (up to the job timeout) instead of failing,
            # and gives its worker slot to other models' jobs while it waits.
            async with (
                buffer.stoppable(),
                asyncio.timeout(deadline - time.monotonic()),
                contextlib.AsyncExitStack() as permitted,
            ):
                async with self._slots.parked_while():
                    await permitted.enter_async_context(self._llm.permit(job.target))
                answered = await self._stream(buffer, job, progress, deadline)
        except JobStopped as stopped:
            if not stopped.cancelled:
                return Outcome(Ending.LOST)
            return Outcome(
                Ending.CANCELLED, response_data=self._partial(buffer, job, progress, "cancelled")
            )
        except TimeoutError:
            error = ProviderTimeout(f"the job ran longer than {job.timeouts.job_s:g} s")
            return self._failed(buffer, job, progress, error)
        except JobError as error:
            return self._failed(buffer, job, progress, error)
        usage = answered.usage or self._llm.count_tokens(
            job.target, job.request, progress.all_output()
        )
        data = response_data(
            model=answered.model,
            provider=answered.provider,
            finish_reason=answered.finish_reason,
            usage=usage,
            cost_usd=self._llm.cost_usd(job.target, usage, answered=answered),
            progress=progress,
            started=job.started,
            attempts=buffer.claim.attempt,
            thinking_blocks=answered.thinking_blocks,
        )
        if answered.finish_reason == "content_filter":
            # The provider stopped the answer for its content policy: the text so far stays.
            filtered = ContentFiltered("the provider's content filter stopped the answer")
            return Outcome(Ending.FAILED, error=filtered, response_data=data)
        return Outcome(Ending.COMPLETED, response_data=data)

    async def _stream(
        self, buffer: Buffer, job: _Job, progress: Progress, deadline: float
    ) -> Answered:
        """One attempt's stream, retrying transient failures that come before any text.

        A retry whose wait (a long Retry-After, say) would outlast the job's time fails the
        job with the error at once, rather than waiting into the job's timeout.
        """
        async for retry in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self._provider_retries + 1) | _waits_past(deadline),
            wait=_wait_honouring_retry_after,
            before_sleep=_log_retry,
            reraise=True,
        ):
            with retry:
                return await self._stream_once(buffer, job, progress)
        raise AssertionError("unreachable: AsyncRetrying reraises the last error")

    async def _stream_once(self, buffer: Buffer, job: _Job, progress: Progress) -> Answered:
        loop = asyncio.get_running_loop()
        progress.call_started()
        answered: Answered | None = None
        stall_s = job.timeouts.stall_s
        # Moving the deadline on every chunk would make a timer handle per chunk; moving it
        # at most every `step` keeps the stall limit within `step` of exact.
        step = min(1.0, stall_s / 4)
        moved_at = 0.0
        try:
            async with asyncio.timeout(job.timeouts.first_token_s) as deadline:
                async for event in self._llm.stream(job.target, job.request):
                    # Any token moves the row to `streaming` and meets the first-token
                    # timeout (text first: the fast path); every one counts as activity.
                    if type(event) is TextDelta:
                        if progress.first_token_at is None:
                            progress.first_token_at = _first_token(job.target, progress)
                        progress.add_text(event.text)
                        buffer.append(event.text)
                    elif type(event) is Routed:
                        progress.provider = event.provider
                        continue
                    elif type(event) is Answered:
                        answered = event
                        continue
                    else:
                        if progress.first_token_at is None:
                            progress.first_token_at = _first_token(job.target, progress)
                        _take_rich(event, progress, buffer)
                    now = loop.time()
                    if now - moved_at >= step:
                        deadline.reschedule(now + stall_s)
                        moved_at = now
            assert answered is not None, "a stream ends with Answered or raises"
            metrics.STREAM_DURATION.labels(
                job.target.label, answered.provider or "unknown"
            ).observe(time.monotonic() - progress.call_started_at)
        except TimeoutError:
            if progress.has_output:
                raise _TextArrived(
                    StreamBroken(f"the stream was silent for {stall_s:g} s")
                ) from None
            raise ProviderTimeout(
                f"no first token within {job.timeouts.first_token_s:g} s"
            ) from None
        except TransientError as error:
            if progress.has_output:
                raise _TextArrived(error) from None
            raise
        return answered

    async def _restart(
        self, buffer: Buffer, job: _Job, progress: Progress, cause: JobError
    ) -> Claim | Outcome:
        """Start the job over from empty text (attempts + 1), or fail it at the limit."""
        claim = buffer.claim
        if claim.attempt >= self._max_attempts:
            return await self._end(buffer, self._failed(buffer, job, progress, cause))
        self._writer.discard(buffer)
        log.warning("attempt_restarted", attempt=claim.attempt, error=cause.message)
        restarted = await self._store.claim(
            claim.job_id, message_id=job.message_id, lease_s=self._lease_s, restart=claim.lease
        )
        if isinstance(restarted, ClaimRefused):
            if restarted.status is not Status.CANCELLED:
                return Outcome(Ending.LOST)
            partial = self._partial(buffer, job, progress, "cancelled")
            return await self._end(buffer, Outcome(Ending.CANCELLED, response_data=partial))
        return restarted

    async def _end(self, buffer: Buffer, outcome: Outcome) -> Outcome:
        """Write the outcome; a row the app cancelled meanwhile keeps `cancelled`."""
        if outcome.ending is Ending.LOST:
            self._writer.discard(buffer)
            return outcome
        if outcome.ending is not Ending.CANCELLED:
            result = await self._writer.finish(buffer, outcome)
            if result.applied:
                return outcome
            if not result.cancelled:
                return Outcome(Ending.LOST)
        self._writer.discard(buffer)
        data = {**(outcome.response_data or {}), "finish_reason": "cancelled"}
        await self._writer.settle_cancelled(buffer, data)
        return Outcome(Ending.CANCELLED, response_data=data)

    def _failed(self, buffer: Buffer, job: _Job, progress: Progress, error: JobError) -> Outcome:
        return Outcome(
            Ending.FAILED, error=error, response_data=self._partial(buffer, job, progress, None)
        )

    def _partial(
        self, buffer: Buffer, job: _Job, progress: Progress, finish_reason: str | None
    ) -> dict[str, Any]:
        """What a job that did not complete used, as far as is known: the model and
        provider called last, and the tokens of the text so far, counted, and their price."""
        model, provider = self._llm.called(job.target)
        usage = None
        if progress.has_output or progress.provider is not None:
            usage = self._llm.count_tokens(job.target, job.request, progress.all_output())
        return response_data(
            model=model,
            provider=progress.provider or provider,
            finish_reason=finish_reason,
            usage=usage,
            cost_usd=None if usage is None else self._llm.cost_usd(job.target, usage),
            progress=progress,
            started=job.started,
            attempts=buffer.claim.attempt,
        )


def _take_rich(event: object, progress: Progress, buffer: Buffer) -> None:
    """Reasoning, refusal and tool-call fragments (text has its own fast path)."""
    if type(event) is ReasoningDelta:
        progress.add_reasoning(event.text)
        buffer.append_reasoning(event.text)
    elif type(event) is RefusalDelta:
        progress.add_refusal(event.text)
        buffer.append(event.text)
    elif type(event) is ToolCallDelta:
        # Assembled here and shown at the end, in response_data (contract section 8).
        progress.add_tool_fragment(event.index, event.id, event.name, event.arguments)


def _first_token(target: Target, progress: Progress) -> float:
    now = time.monotonic()
    label = progress.provider or "unknown"
    structlog.contextvars.bind_contextvars(provider=label)
    metrics.TIME_TO_FIRST_TOKEN.labels(target.label, label).observe(now - progress.call_started_at)
    log.info("first_token")
    return now


def _record(outcome: Outcome, *, model_label: str, started: float) -> None:
    """Count a finished job (a handed-back or taken-over one is not finished)."""
    if outcome.ending in (Ending.LOST, Ending.HANDED_BACK):
        return
    response = outcome.response_data or {}
    usage = response.get("usage") or {}
    metrics.job_finished(
        outcome=outcome.ending.value,
        model=model_label,
        provider=response.get("provider") or "none",
        error_code="" if outcome.error is None else outcome.error.code.value,
        duration_s=time.monotonic() - started,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        cost_usd=response.get("cost_usd"),
    )


def _retryable(error: BaseException) -> bool:
    return isinstance(error, TransientError)


_backoff = wait_exponential_jitter(multiplier=0.5, max=20, jitter=0.5)


def _wait_honouring_retry_after(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    retry_after = error.retry_after_s if isinstance(error, RateLimited) else None
    return max(_backoff(state), retry_after or 0.0)


class _waits_past(stop_base):  # noqa: N801 (named as tenacity's own stop conditions are)
    """Stop retrying when the next wait would end after `deadline` (time.monotonic)."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        # tenacity computes the wait before it asks whether to stop.
        return time.monotonic() + retry_state.upcoming_sleep >= self._deadline


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    code = error.code.value if isinstance(error, JobError) else "internal"
    context = structlog.contextvars.get_contextvars()
    metrics.PROVIDER_RETRIES.labels(context.get("model_label", "none"), code).inc()
    log.warning("provider_retry", retry=state.attempt_number, error_code=code)
