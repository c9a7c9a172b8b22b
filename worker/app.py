"""The composition root: builds the real store, queue, LLM client and writer from settings."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from worker import __version__, endpoints, exit_codes, housekeeping, metrics
from worker.exit_codes import ExitCode
from worker.jobs import Ending
from worker.llm import LITELLM_VERSION, Completer, ModelCatalog
from worker.postgres import DatabaseUnavailable
from worker.queue import JobQueue
from worker.runner import JobRunner, Timeouts
from worker.settings import Settings
from worker.slots import Slots
from worker.store import ClaimRefused, JobStore
from worker.supervisor import Disposition, Mode, QueuePolicy, Supervisor
from worker.waiting import unless_set
from worker.writer import StreamWriter

log = structlog.get_logger(__name__)


class _Lifecycle:
    """What the endpoints and the signals see while the worker starts, runs and stops.

    While it starts (LiteLLM's import, PostgreSQL not up yet) it is alive but not ready, and
    a signal ends the start; once the supervisor runs, they are the supervisor's.
    """

    def __init__(self, stall_limit_s: float) -> None:
        self._stall_limit_s = stall_limit_s
        self.stop_requested = asyncio.Event()
        self.supervisor: Supervisor | None = None
        self.store: JobStore | None = None
        self.queue: JobQueue | None = None

    def is_alive(self) -> bool:
        return self.supervisor is None or self.supervisor.is_alive(self._stall_limit_s)

    def is_stopping(self) -> bool:
        return self.stop_requested.is_set()

    def stop(self) -> None:
        self.stop_requested.set()
        if self.supervisor is not None:
            self.supervisor.stop()

    async def ping_postgres(self) -> None:
        if self.store is None:
            raise DatabaseUnavailable("not connected yet")
        await self.store.ping()

    async def ping_sqs(self) -> None:
        if self.queue is None:
            raise ConnectionError("not connected yet")
        await self.queue.ping()


async def connect_store(settings: Settings, stop: asyncio.Event | None = None) -> JobStore | None:
    """Connect to PostgreSQL, retrying with backoff for `WORKER_STARTUP_TIMEOUT_S` (a task may
    start before its database does); None if `stop` is set first.

    Raises DatabaseUrlInvalid at once for a malformed URL, DatabaseUnavailable (one sentence
    naming host, port and database) once the time is up.
    """
    dsn = settings.database_url.get_secret_value()
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        stop=stop_after_delay(settings.startup_timeout_s),
        before_sleep=_log_unreachable,
        reraise=True,
    )

    async def connect() -> JobStore:
        async for attempt in retrying:
            with attempt:
                return await JobStore.connect(dsn)
        raise AssertionError("unreachable: AsyncRetrying reraises the last error")

    return await connect() if stop is None else await unless_set(stop, connect())


def _log_unreachable(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("database_unreachable", error=str(error), attempts=state.attempt_number)


@dataclass(frozen=True)
class Core:
    store: JobStore
    writer: StreamWriter
    runner: JobRunner
    slots: Slots


def open_llm(settings: Settings) -> Completer:
    """The models file, validated, behind LiteLLM (ModelsFileError if it is wrong)."""
    catalog = ModelCatalog.load(settings.models_file)
    return Completer(
        catalog,
        allow_unlisted=settings.allow_unlisted_models,
        media_url_hosts=settings.media_url_hosts,
    )


@contextlib.asynccontextmanager
async def open_core(settings: Settings, store: JobStore, llm: Completer) -> AsyncIterator[Core]:
    """Writer (with its flush task) and runner over a connected store; closing flushes what
    is left, then closes the LLM edge and the store."""
    writer = StreamWriter(
        store,
        flush_interval_s=settings.flush_interval_s,
        flush_max_chars=settings.flush_max_chars,
        content_refresh_s=settings.content_refresh_s,
        lease_s=settings.lease_s,
    )
    # As many jobs may wait for their provider's own limit, beyond the slots, as run.
    slots = Slots(settings.concurrency, max_parked=settings.concurrency)
    runner = JobRunner(
        store=store,
        writer=writer,
        llm=llm,
        slots=slots,
        timeouts=Timeouts(
            first_token_s=settings.first_token_timeout_s,
            stall_s=settings.stall_timeout_s,
            job_s=settings.job_timeout_s,
        ),
        provider_retries=settings.provider_retries,
        max_attempts=settings.max_attempts,
        lease_s=settings.lease_s,
    )
    metrics.BUILD_INFO.info({"version": __version__, "litellm_version": LITELLM_VERSION})
    try:
        async with asyncio.TaskGroup() as tasks:
            flushing = tasks.create_task(writer.run(), name="writer")
            try:
                yield Core(store=store, writer=writer, runner=runner, slots=slots)
            finally:
                writer.close()
                await flushing
    finally:
        await llm.aclose()
        await store.close()


async def run_worker(settings: Settings, *, mode: Mode) -> int:
    """`streaming-worker run` (with `--drain` or `--once`): the queue-driven daemon.

    The endpoints come up first: while the worker starts (and waits for PostgreSQL)
    `/healthz` says alive and `/readyz` not ready, so an orchestrator neither kills it nor
    sends it traffic; SIGTERM then ends the start with exit 0.
    """
    # A receive round takes up to the long poll plus SQS's own retries.
    lifecycle = _Lifecycle(max(settings.health_stall_s, settings.receive_wait_s + 5.0))
    async with endpoints.serve(
        port=settings.metrics_port,
        is_alive=lifecycle.is_alive,
        probes={"postgres": lifecycle.ping_postgres, "sqs": lifecycle.ping_sqs},
        is_stopping=lifecycle.is_stopping,
    ) as metrics_port:
        with _on_signals(lifecycle.stop):
            llm = open_llm(settings)
            store = await connect_store(settings, lifecycle.stop_requested)
            if store is None:
                await llm.aclose()
                log.info("shutdown_complete", mode=mode.value)
                return ExitCode.OK
            lifecycle.store = store
            async with (
                open_core(settings, store, llm) as core,
                JobQueue.open(
                    settings.sqs_queue_url,
                    region=settings.aws_region,
                    endpoint_url=settings.sqs_endpoint_url,
                ) as queue,
                _housekeeping(settings, core.store, queue),
            ):
                lifecycle.queue = queue
                supervisor = lifecycle.supervisor = Supervisor(
                    queue=queue,
                    store=core.store,
                    runner=core.runner,
                    slots=core.slots,
                    policy=QueuePolicy(
                        receive_wait_s=settings.receive_wait_s,
                        visibility_timeout_s=settings.visibility_timeout_s,
                        lease_s=settings.lease_s,
                        max_invisible_s=settings.job_timeout_s + settings.visibility_timeout_s,
                        takeover_interval_s=settings.takeover_interval_s,
                    ),
                    shutdown_grace_s=settings.shutdown_grace_s,
                    mode=mode,
                )
                if lifecycle.stop_requested.is_set():
                    supervisor.stop()
                # LiteLLM's import leaves ~400k long-lived objects. A full collection walks
                # them all and stalls the event loop (320 ms measured here): every stream's
                # text waits. Nothing made during startup is garbage, so exempt it.
                gc.freeze()
                log.info(
                    "worker_started",
                    mode=mode.value,
                    concurrency=settings.concurrency,
                    metrics_port=metrics_port,
                )
                outcomes = await supervisor.run()
    if mode is Mode.DAEMON:
        return ExitCode.OK
    return exit_codes.for_run(outcomes)


async def run_job(settings: Settings, job_id: uuid.UUID) -> int:
    """`streaming-worker run --job-id`: one job straight from the table, no queue."""
    structlog.contextvars.bind_contextvars(job_id=str(job_id))
    llm = open_llm(settings)
    store = await connect_store(settings)
    assert store is not None
    async with open_core(settings, store, llm) as core:
        claim = await core.store.claim(job_id, message_id=None, lease_s=settings.lease_s)
        if isinstance(claim, ClaimRefused):
            return _refused_exit(claim)
        core.slots.take()
        task = asyncio.current_task()
        assert task is not None
        with _on_signals(task.cancel):
            outcome = await core.runner.run(claim, message_id=None)
    status = outcome.ending.row_status
    log.info("job_finished", status=None if status is None else status.value)
    if outcome.ending is Ending.LOST:
        return exit_codes.for_run(Counter({Disposition.LOST: 1}))
    assert status is not None
    return exit_codes.for_status(status)


def _refused_exit(refusal: ClaimRefused) -> int:
    if not refusal.exists:
        log.error("job_not_found")
        return ExitCode.USAGE
    if refusal.status is not None and refusal.status.is_terminal:
        log.info("job_already_ended", status=refusal.status.value)
        return exit_codes.for_status(refusal.status)
    log.error("job_running_elsewhere", lease_left_s=round(refusal.lease_left_s, 1))
    return ExitCode.JOB_FAILED


@contextlib.asynccontextmanager
async def _housekeeping(
    settings: Settings, store: JobStore, queue: JobQueue
) -> AsyncIterator[None]:
    """The periodic tasks of a queue-driven worker, cancelled and awaited when the block ends."""

    async def purge() -> None:
        await housekeeping.purge_deltas(store, retention_s=settings.delta_retention_s)

    async def requeue() -> None:
        await housekeeping.requeue_orphans(
            store,
            queue,
            orphaned_after_s=settings.orphaned_after_s,
            max_attempts=settings.max_attempts,
        )

    async def measure() -> None:
        await housekeeping.measure_queue(queue)

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(housekeeping.every(settings.delta_sweep_interval_s, purge)),
            group.create_task(housekeeping.every(settings.orphan_sweep_interval_s, requeue)),
            group.create_task(housekeeping.every(settings.queue_depth_interval_s, measure)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


@contextlib.contextmanager
def _on_signals(handler: Callable[[], object]) -> Iterator[None]:
    """SIGTERM (ECS) and SIGINT (Ctrl-C) call `handler`; it must only start the shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
