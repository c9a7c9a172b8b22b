"""`streaming-worker submit/status/cancel`: the app's side of the contract, for integrators:
submit a job, follow its answer, read its status, cancel it."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from worker import exit_codes
from worker.client import describe, queries
from worker.client.follow import Follower
from worker.exit_codes import ExitCode
from worker.jobs import Status
from worker.postgres import Database
from worker.queue import JobQueue
from worker.settings import Settings


async def submit(settings: Settings, requests: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Submit jobs as the app does; returns their ids in order."""
    async with (
        await _connect(settings) as db,
        JobQueue.open(
            settings.sqs_queue_url,
            region=settings.aws_region,
            endpoint_url=settings.sqs_endpoint_url,
        ) as queue,
    ):
        return [await submit_one(db, queue, request) for request in requests]


async def submit_one(db: Database, queue: JobQueue, request_data: dict[str, Any]) -> uuid.UUID:
    """Insert the row, then send `{"jobId": ...}`: the app's order, so the row exists first."""
    job_id = await queries.insert_job(db, request_data)
    await queue.send(job_id)
    return job_id


def exit_code_for(status: Status | None) -> int:
    """As `run --job-id`: 0 completed or cancelled, 1 failed, 2 no such job."""
    if status is None:
        return ExitCode.USAGE
    return exit_codes.for_status(status)


async def submit_command(settings: Settings, request_data: dict[str, Any], *, follow: bool) -> int:
    [job_id] = await submit(settings, [request_data])
    if not follow:
        print(job_id)
        return ExitCode.OK
    print(f"job {job_id}", file=sys.stderr, flush=True)
    return await follow_command(settings, job_id)


async def follow_command(settings: Settings, job_id: uuid.UUID) -> int:
    async with await _connect(settings) as db:
        status = await Follower(db, job_id).run()
        view = await queries.job_view(db, job_id)
    if sys.stdout.isatty():
        print()
    if view is not None:
        # What the model asked for: the app would run these and send a new job (README).
        for call in describe.tool_calls(view["response_data"] or {}):
            print(f"streaming-worker: tool call {call}", file=sys.stderr)
        print(describe.one_line(view), file=sys.stderr)
    return exit_code_for(status)


async def status_command(settings: Settings, job_id: uuid.UUID, *, as_json: bool) -> int:
    async with await _connect(settings) as db:
        view = await queries.job_view(db, job_id)
    if view is None:
        print(f"streaming-worker: no job {job_id}", file=sys.stderr)
        return ExitCode.USAGE
    if as_json:
        print(json.dumps(describe.public(view), indent=2))
    else:
        print(describe.describe(view))
    return ExitCode.OK


async def cancel_command(settings: Settings, job_id: uuid.UUID) -> int:
    """0 when the job is cancelled now (or already was), 1 when it had already ended."""
    async with await _connect(settings) as db:
        changed, status = await queries.cancel_job(db, job_id)
    if status is None:
        print(f"streaming-worker: no job {job_id}", file=sys.stderr)
        return ExitCode.USAGE
    if changed:
        print(f"{job_id} cancelled")
        return ExitCode.OK
    if status is Status.CANCELLED:
        print(f"{job_id} was already cancelled")
        return ExitCode.OK
    print(f"{job_id} already ended {status.value}: not cancelled", file=sys.stderr)
    return ExitCode.JOB_FAILED


async def _connect(settings: Settings) -> Database:
    return await Database.connect(settings.database_url.get_secret_value())
