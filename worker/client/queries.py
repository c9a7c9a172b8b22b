"""The app-side SQL: what the app and its polling clients run against the job tables.

The worker's own statements are in `worker/store.py`; these run through `Database`, the
PostgreSQL edge's handle for one-off queries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.jobs import Status
from worker.postgres import Database


async def insert_job(db: Database, request_data: object) -> uuid.UUID:
    """Write a new `pending` job as the app does; returns its id."""
    job_id: uuid.UUID = await db.fetchval(
        "INSERT INTO ai_streaming_jobs (request_data) VALUES ($1::jsonb) RETURNING id",
        json.dumps(request_data),
    )
    return job_id


async def job_status(db: Database, job_id: uuid.UUID) -> Status | None:
    """The job's status; None when there is no such row."""
    value = await db.fetchval("SELECT status FROM ai_streaming_jobs WHERE id = $1", job_id)
    return None if value is None else Status(value)


async def job_rows(db: Database, job_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The rows a polling client reads, by id."""
    rows = await db.fetch(
        "SELECT id, status, partial_content, reasoning_content, response_data::text,"
        " error_code, error_message, attempts FROM ai_streaming_jobs"
        " WHERE id = ANY($1::uuid[])",
        list(job_ids),
    )
    return [{**row, "response_data": json.loads(row["response_data"] or "null")} for row in rows]


async def job_view(db: Database, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The row as the app shows it: status, attempts, error, response, text, reasoning, times."""
    row = await db.fetchrow(
        "SELECT id, status, attempts, error_code, error_message, partial_content,"
        " reasoning_content, response_data::text,"
        " coalesce(request_data->>'model', request_data->>'modelId') AS model,"
        " created_at, started_at, updated_at, completed_at FROM ai_streaming_jobs WHERE id = $1",
        job_id,
    )
    if row is None:
        return None
    return {**row, "response_data": json.loads(row["response_data"] or "null")}


@dataclass(frozen=True, slots=True)
class Delta:
    """One flush's new text (contract section 7): the answer's and the reasoning's."""

    attempt: int
    seq: int
    content: str
    reasoning: str | None = None


async def deltas_after(db: Database, job_id: uuid.UUID, *, attempt: int, seq: int) -> list[Delta]:
    """A client's cursor read (contract section 7): the deltas after `(attempt, seq)`, in
    order."""
    rows = await db.fetch(
        "SELECT attempt, seq, content, reasoning FROM ai_streaming_job_deltas"
        " WHERE job_id = $1 AND (attempt, seq) > ($2, $3) ORDER BY attempt, seq",
        job_id,
        attempt,
        seq,
    )
    return [Delta(row["attempt"], row["seq"], row["content"], row["reasoning"]) for row in rows]


async def cancel_job(db: Database, job_id: uuid.UUID) -> tuple[bool, Status | None]:
    """Set `cancelled` as the app does, unless the job already ended.

    Returns (whether this call cancelled it, the status now; None when there is no row).
    """
    cancelled = await db.fetchval(
        "UPDATE ai_streaming_jobs SET status = 'cancelled', updated_at = now(),"
        " completed_at = coalesce(completed_at, now())"
        " WHERE id = $1 AND status IN ('pending', 'processing', 'streaming')"
        " RETURNING true",
        job_id,
    )
    return bool(cancelled), await job_status(db, job_id)


async def create_database(db: Database, name: str) -> bool:
    """Create database `name` on this server unless it exists (the demo's); True if created."""
    if await db.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        return False
    await db.execute(f'CREATE DATABASE "{name}"')
    return True
