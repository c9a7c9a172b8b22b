"""The app-side SQL (`worker/client/queries.py`), against the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg  # noqa: TID251 (tests write deltas as the worker does)
import pytest

from worker.client import queries
from worker.client.queries import Delta
from worker.jobs import Status
from worker.postgres import Database


@pytest.fixture
async def app_db(database_url: str) -> AsyncIterator[Database]:
    async with await Database.connect(database_url) as db:
        yield db


async def test_an_inserted_job_is_pending_and_shown_with_its_model(app_db: Database) -> None:
    job_id = await queries.insert_job(
        app_db, {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
    )

    assert await queries.job_status(app_db, job_id) is Status.PENDING
    view = await queries.job_view(app_db, job_id)
    assert view is not None
    assert (view["status"], view["model"], view["attempts"]) == ("pending", "sim-model", 0)
    [row] = await queries.job_rows(app_db, [job_id])
    assert (row["id"], row["partial_content"], row["response_data"]) == (job_id, "", None)
    assert (view["reasoning_content"], row["reasoning_content"]) == ("", "")
    assert await queries.job_status(app_db, uuid.uuid4()) is None
    assert await queries.job_view(app_db, uuid.uuid4()) is None


async def test_cancel_applies_once_and_never_to_an_ended_job(
    app_db: Database, db: asyncpg.Connection
) -> None:
    job_id = await queries.insert_job(app_db, {"model": "m", "messages": []})
    ended = await queries.insert_job(app_db, {"model": "m", "messages": []})
    await db.execute("UPDATE ai_streaming_jobs SET status = 'completed' WHERE id = $1", ended)

    assert await queries.cancel_job(app_db, job_id) == (True, Status.CANCELLED)
    assert await queries.cancel_job(app_db, job_id) == (False, Status.CANCELLED)
    assert await queries.cancel_job(app_db, ended) == (False, Status.COMPLETED)
    assert await queries.cancel_job(app_db, uuid.uuid4()) == (False, None)


async def test_deltas_after_a_cursor_come_in_order_across_attempts(
    app_db: Database, db: asyncpg.Connection
) -> None:
    job_id = await queries.insert_job(app_db, {"model": "m", "messages": []})
    await db.executemany(
        "INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)"
        " VALUES ($1, $2, $3, $4, $5)",
        [
            (job_id, 2, 1, "c", None),
            (job_id, 1, 2, "b", None),
            (job_id, 1, 1, "", "thinks"),
        ],
    )

    every = await queries.deltas_after(app_db, job_id, attempt=0, seq=0)
    assert every == [Delta(1, 1, "", "thinks"), Delta(1, 2, "b"), Delta(2, 1, "c")]
    assert await queries.deltas_after(app_db, job_id, attempt=1, seq=2) == [Delta(2, 1, "c")]


async def test_create_database_only_when_missing(app_db: Database) -> None:
    name = f"sw_test_created_{uuid.uuid4().hex[:8]}"
    try:
        assert await queries.create_database(app_db, name) is True
        assert await queries.create_database(app_db, name) is False
    finally:
        await app_db.execute(f'DROP DATABASE IF EXISTS "{name}"')
