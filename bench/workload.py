"""The workload: the run's jobs written and sent as the app does, a few messages ahead of the
workers, and the idle-pickup probes before them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import postgres
from bench.config import MODEL, POLL_S, BenchError, messages_for, note
from bench.parts import Parts, Sample, sample
from bench.processes import Child
from bench.providers import job_options
from bench.workerlog import WorkerLog

if TYPE_CHECKING:
    from worker.queue import JobQueue

STATUS_EVERY_S = 5.0
SEND_PARALLEL = 10
# Idle pickup: one-token jobs sent one at a time, each after the last has ended.
PICKUP_PROBES = 40
PICKUP_SPACING_S = 0.2
PICKUP_TIMEOUT_S = 30


async def insert_jobs(parts: Parts) -> list[str]:
    """The run's job rows, written as the app does; their ids in job order."""
    cfg = parts.cfg
    options = job_options(rich=cfg.rich, provider=cfg.provider)
    requests = [
        {"model": MODEL, "messages": messages_for("job", i, cfg), "options": options}
        for i in range(cfg.jobs)
    ]
    return await postgres.insert_jobs(parts.dsn, requests)


@dataclass
class Run:
    """How the worker phase went, as the harness saw it."""

    finished: bool
    first_send_at: float | None
    first_claim: Sample | None
    done: Sample


async def feed_and_watch(
    parts: Parts,
    *,
    workers: list[Child],
    logs: list[WorkerLog],
    queue: JobQueue,
    job_ids: list[str],
    sent: dict[str, float],
) -> Run:
    """Send messages as slots free up; sample /proc at the first claim and when all ended."""
    cfg = parts.cfg

    def claimed() -> int:
        return sum(len(log.claimed) for log in logs)

    def ended() -> int:
        return sum(len(log.ended) for log in logs)

    async def feed() -> None:
        pending = list(job_ids)
        while pending:
            room = cfg.waiting_limit - (len(sent) - claimed())
            batch, pending = pending[: max(room, 0)], pending[max(room, 0) :]
            for start in range(0, len(batch), SEND_PARALLEL):
                await asyncio.gather(
                    *(send(queue, job_id, sent) for job_id in batch[start : start + SEND_PARALLEL])
                )
            await asyncio.sleep(POLL_S / 2)

    first_claim: Sample | None = None
    began = time.monotonic()
    last_status = began
    feeder = asyncio.create_task(feed())
    try:
        while time.monotonic() - began < cfg.deadline_s:
            for log in logs:
                log.poll()
            if first_claim is None and claimed():
                first_claim = await sample(parts, workers, database=False)
            if ended() >= cfg.jobs:
                break
            if feeder.done() and feeder.exception() is not None:
                raise BenchError(f"sending messages failed: {feeder.exception()!r}")
            dead = [w for w in workers if not w.alive()]
            if dead:
                raise BenchError(f"{dead[0].name} exited early\n{dead[0].log_tail()}")
            if time.monotonic() - last_status >= STATUS_EVERY_S:
                last_status = time.monotonic()
                note(
                    f"{last_status - began:5.0f} s: sent {len(sent)}, claimed {claimed()},"
                    f" ended {ended()}/{cfg.jobs}"
                )
            await asyncio.sleep(POLL_S)
        done = await sample(parts, workers, database=True)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    return Run(
        finished=ended() >= cfg.jobs,
        first_send_at=min(sent.values(), default=None),
        first_claim=first_claim,
        done=done,
    )


async def idle_pickups(parts: Parts, queue: JobQueue, logs: Sequence[WorkerLog]) -> list[float]:
    """Messages sent one at a time to idle workers, each a one-token job: the receive path's
    own latency (message sent -> row claimed), with no backlog in front of it."""
    directive = "[[sim tokens=1 tps=100 ttft=0]]"
    requests = [
        {"model": MODEL, "messages": [{"role": "user", "content": f"p{i} {directive}"}]}
        for i in range(PICKUP_PROBES)
    ]
    sent: dict[str, float] = {}
    async with await postgres.connect(parts.dsn) as db:
        for job_id in await postgres.insert_probes(db, requests):
            await asyncio.sleep(PICKUP_SPACING_S)  # the workers are back in their long polls
            await send(queue, job_id, sent)
            deadline = time.monotonic() + PICKUP_TIMEOUT_S
            while not any(job_id in log.ended for log in logs):
                if time.monotonic() > deadline:
                    raise BenchError(f"pickup probe {job_id} did not end in {PICKUP_TIMEOUT_S} s")
                await asyncio.sleep(0.01)
                for log in logs:
                    log.poll()
        started = await postgres.probes_started_at(db)
    for log in logs:
        log.forget_jobs()
    return [at - sent[job_id] for job_id, at in started.items()]


async def send(queue: JobQueue, job_id: str, sent: dict[str, float]) -> None:
    await queue.send(uuid.UUID(job_id))
    sent[job_id] = time.time()  # when SQS has it: the app's "sent"
