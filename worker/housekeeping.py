"""Periodic work beside the jobs: purging ended jobs' deltas and re-sending orphaned jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from worker import metrics
from worker.jobs import Status
from worker.queue import JobQueue
from worker.store import JobStore

log = structlog.get_logger(__name__)


async def every(interval_s: float, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` now and then every `interval_s` until cancelled; a failure waits a round."""
    while True:
        try:
            await work()
        except Exception as error:  # noqa: BLE001 (the next round tries again)
            log.warning("housekeeping_failed", task=work.__name__, error=str(error))
        await asyncio.sleep(interval_s)


async def purge_deltas(store: JobStore, *, retention_s: float) -> None:
    """Delete ended jobs' deltas once `retention_s` has passed (contract section 7)."""
    deleted = await store.purge_deltas(retention_s=retention_s)
    if deleted:
        log.info("deltas_purged", rows=deleted)


async def requeue_orphans(
    store: JobStore, queue: JobQueue, *, orphaned_after_s: float, max_attempts: int
) -> None:
    """Send a fresh message for jobs whose worker and message both vanished, or fail them."""
    for job_id, status in await store.sweep_orphans(
        orphaned_after_s=orphaned_after_s, max_attempts=max_attempts
    ):
        if status is Status.FAILED:
            log.warning("orphan_failed", job_id=str(job_id))
        else:
            await queue.send(job_id)
            log.warning("orphan_requeued", job_id=str(job_id))


async def measure_queue(queue: JobQueue) -> None:
    """Export the queue's (and its DLQ's) depth: one call per queue per round, not per receive."""
    for name, counts in (await queue.depth()).items():
        metrics.queue_depth(name, counts)
