"""Live text for clients that poll often: the deltas table (contract section 7)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)

from simulator import answer_text
from tests.conftest import StartWorker, chat, row
from tests.support import eventually

CURSOR_SQL = """
SELECT attempt, seq, content FROM ai_streaming_job_deltas
WHERE job_id = $1 AND (attempt, seq) > ($2, $3) ORDER BY attempt, seq
"""


async def read_with_cursor(database_url: str, job_id: uuid.UUID) -> tuple[str, int]:
    """Follow one job as a well-built client does; returns its text and how many reads grew it."""
    conn = await asyncpg.connect(database_url)
    try:
        attempt, seq, text, growths = 0, 0, "", 0
        while True:
            status = await conn.fetchval(
                "SELECT status FROM ai_streaming_jobs WHERE id = $1", job_id
            )
            for delta in await conn.fetch(CURSOR_SQL, job_id, attempt, seq):
                if delta["attempt"] != attempt:
                    attempt, text = delta["attempt"], ""  # the answer started over
                seq = delta["seq"]
                text += delta["content"]
                growths += 1
            if status == "completed":
                return text, growths
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def test_a_cursor_reader_rebuilds_every_answer_exactly(
    db: asyncpg.Connection, database_url: str, submit: Any, start_worker: StartWorker
) -> None:
    texts = {}
    for index in range(5):
        text = f"Cursor {index} {uuid.uuid4()} [[sim tokens=50 tps=50]]"
        texts[await submit(chat(text))] = text
    worker = start_worker("--drain")
    readers = {job_id: read_with_cursor(database_url, job_id) for job_id in texts}

    results = dict(zip(readers, await asyncio.gather(*readers.values()), strict=True))
    assert await worker.wait() == 0, worker.output

    for job_id, (text, growths) in results.items():
        expected = answer_text([{"role": "user", "content": texts[job_id]}], 50)
        assert text == expected
        assert (await row(db, job_id))["partial_content"] == expected
        assert growths > 3, "the reader should see the answer arrive in several deltas"


async def test_partial_content_is_never_staler_than_the_refresh_interval(
    database_url: str, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Stale? {uuid.uuid4()} [[sim tokens=80 tps=40]]"
    job_id = await submit(chat(text))
    refresh_s = 0.5
    # A beat may run late on a loaded machine (the suite runs in three processes on two
    # cores): staler than refresh + 0.25 s would still be a broken refresh, 1 s the default.
    late_s = 0.25
    worker = start_worker("--drain", WORKER_CONTENT_REFRESH_S=str(refresh_s))

    conn = await asyncpg.connect(database_url)
    lagging_samples = 0
    try:
        while True:
            # One snapshot: the row and every delta committed more than refresh_s + late_s ago.
            async with conn.transaction(isolation="repeatable_read"):
                record = await conn.fetchrow(
                    "SELECT status, partial_content FROM ai_streaming_jobs WHERE id = $1", job_id
                )
                old_text = await conn.fetchval(
                    "SELECT coalesce(string_agg(content, '' ORDER BY seq), '')"
                    " FROM ai_streaming_job_deltas WHERE job_id = $1 AND attempt = 1"
                    " AND created_at <= now() - make_interval(secs => $2)",
                    job_id,
                    refresh_s + late_s,
                )
                all_text = await conn.fetchval(
                    "SELECT coalesce(string_agg(content, '' ORDER BY seq), '')"
                    " FROM ai_streaming_job_deltas WHERE job_id = $1 AND attempt = 1",
                    job_id,
                )
            assert record is not None
            content = record["partial_content"]
            assert content.startswith(old_text) or old_text.startswith(content)
            assert len(content) >= len(old_text), "partial_content is staler than the refresh"
            assert all_text.startswith(content)
            lagging_samples += len(content) < len(all_text)
            if record["status"] == "completed":
                assert content == all_text
                break
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    assert await worker.wait() == 0, worker.output
    # The deltas ran ahead of the row at times: the refresh interval really spaces the rewrites.
    assert lagging_samples > 0


async def test_ended_jobs_deltas_are_deleted_after_the_retention(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    job_id = await submit(chat(f"Short-lived {uuid.uuid4()}"))
    worker = start_worker(WORKER_DELTA_RETENTION_S="1", WORKER_DELTA_SWEEP_INTERVAL_S="0.2")

    async def completed_with_deltas() -> bool:
        status = (await row(db, job_id))["status"]
        count = await db.fetchval(
            "SELECT count(*) FROM ai_streaming_job_deltas WHERE job_id = $1", job_id
        )
        return bool(status == "completed" and count > 0)

    async def deltas_gone() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM ai_streaming_job_deltas WHERE job_id = $1", job_id
        )
        return bool(count == 0)

    await eventually(completed_with_deltas, what="job completed with its deltas")
    await eventually(deltas_gone, timeout_s=10, what="deltas swept")
    assert (await row(db, job_id))["partial_content"] != ""

    worker.popen.terminate()
    assert await worker.wait() == 0, worker.output
    assert '"shutdown_complete"' in worker.output
