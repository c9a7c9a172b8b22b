"""The store's batched claims, against the real database."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg  # noqa: TID251 (tests write rows as the app does)

from worker.jobs import Claim, Status
from worker.store import ClaimRefused, JobStore


async def insert_jobs(db: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    request = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "hi"}]})
    return [
        await db.fetchval(
            "INSERT INTO ai_streaming_jobs (request_data) VALUES ($1::jsonb) RETURNING id",
            request,
        )
        for _ in range(count)
    ]


async def test_claims_made_together_share_one_statement_and_one_job_has_one_winner(
    db: asyncpg.Connection, database_url: str
) -> None:
    first, second, third = await insert_jobs(db, 3)
    store = await JobStore.connect(database_url)
    try:
        results = await asyncio.gather(
            store.claim(first, message_id="m1", lease_s=30),
            store.claim(first, message_id="m2", lease_s=30),  # the same job, delivered twice
            store.claim(second, message_id="m3", lease_s=30),
            store.claim(third, message_id="m4", lease_s=30),
            store.claim(uuid.uuid4(), message_id="m5", lease_s=30),
        )
    finally:
        await store.close()

    duplicate_a, duplicate_b, claimed_second, claimed_third, missing = results
    a_won = isinstance(duplicate_a, Claim)
    winner, loser = (duplicate_a, duplicate_b) if a_won else (duplicate_b, duplicate_a)
    assert isinstance(winner, Claim)
    assert winner.attempt == 1
    assert isinstance(loser, ClaimRefused)
    assert loser.status is Status.PROCESSING
    assert loser.leased_by_message == ("m1" if a_won else "m2")
    assert isinstance(claimed_second, Claim)
    assert isinstance(claimed_third, Claim)
    assert missing == ClaimRefused()
    rows = await db.fetch(
        "SELECT status, attempts, started_at FROM ai_streaming_jobs WHERE id = ANY($1::uuid[])",
        [first, second, third],
    )
    assert [(r["status"], r["attempts"]) for r in rows] == [("processing", 1)] * 3
    # now() is the statement's transaction start: one statement claimed all three.
    assert len({r["started_at"] for r in rows}) == 1


async def test_a_job_claimed_and_ended_is_refused_with_its_status(
    db: asyncpg.Connection, database_url: str
) -> None:
    (job_id,) = await insert_jobs(db, 1)
    await db.execute("UPDATE ai_streaming_jobs SET status = 'completed' WHERE id = $1", job_id)
    store = await JobStore.connect(database_url)
    try:
        refused = await store.claim(job_id, message_id="m", lease_s=30)
    finally:
        await store.close()
    assert refused == ClaimRefused(status=Status.COMPLETED)


async def test_a_cancelled_job_whose_worker_died_unsettled_is_brought_level_with_its_deltas(
    db: asyncpg.Connection, database_url: str
) -> None:
    died, alive = await insert_jobs(db, 2)
    store = await JobStore.connect(database_url)
    try:
        claims = [
            await store.claim(job, message_id=f"m-{job}", lease_s=30) for job in (died, alive)
        ]
        assert all(isinstance(claim, Claim) for claim in claims)
        for job in (died, alive):
            await db.execute(
                "INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)"
                " VALUES ($1, 1, 1, 'Hel', 'hm'), ($1, 1, 2, 'lo', NULL)",
                job,
            )
        # The app cancels both; one worker dies before it settles (its lease runs out).
        await db.execute(
            "UPDATE ai_streaming_jobs SET status = 'cancelled' WHERE id = ANY($1::uuid[])",
            [died, alive],
        )
        await db.execute(
            "UPDATE ai_streaming_jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1",
            died,
        )
        # Their messages come back to another worker.
        for job in (died, alive):
            refused = await store.claim(job, message_id="again", lease_s=30)
            assert isinstance(refused, ClaimRefused)
            assert refused.status is Status.CANCELLED
    finally:
        await store.close()

    settled = await db.fetchrow("SELECT * FROM ai_streaming_jobs WHERE id = $1", died)
    assert (settled["partial_content"], settled["reasoning_content"]) == ("Hello", "hm")
    assert settled["completed_at"] is not None
    assert settled["content_seq"] == 2
    # The live worker settles its own job (it may hold text the deltas do not yet have).
    untouched = await db.fetchrow("SELECT * FROM ai_streaming_jobs WHERE id = $1", alive)
    assert (untouched["partial_content"], untouched["completed_at"]) == ("", None)
