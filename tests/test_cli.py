"""`streaming-worker` commands and their exit codes (contract section 6)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)

from tests.conftest import ADMIN_DSN, StartWorker, chat, requests_for, row
from tests.support import worker_command


async def test_once_with_an_empty_queue_exits_zero_after_one_poll(
    start_worker: StartWorker,
) -> None:
    worker = start_worker("--once", WORKER_RECEIVE_WAIT_S="1")
    assert await worker.wait() == 0, worker.output


async def test_once_processes_exactly_one_message(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    first = await submit(chat(f"first {uuid.uuid4()}"))
    second = await submit(chat(f"second {uuid.uuid4()}"))

    worker = start_worker("--once")
    assert await worker.wait() == 0, worker.output

    statuses = sorted([(await row(db, first))["status"], (await row(db, second))["status"]])
    assert statuses == ["completed", "pending"]


async def test_once_exits_non_zero_when_its_job_fails(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    job_id = await submit({"model": "sim-model", "messages": []})
    worker = start_worker("--once")
    assert await worker.wait() == 1, worker.output
    assert (await row(db, job_id))["status"] == "failed"


async def test_job_id_runs_a_job_from_the_table_and_never_twice(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"no queue {uuid.uuid4()}"
    job_id = await submit(chat(text), send=False)

    worker = start_worker("--job-id", str(job_id))
    assert await worker.wait() == 0, worker.output
    assert (await row(db, job_id))["status"] == "completed"

    again = start_worker("--job-id", str(job_id))
    assert await again.wait() == 0, again.output
    assert requests_for(simulator_url, text) == 1
    assert (await row(db, job_id))["attempts"] == 1


async def test_job_id_exit_codes_for_a_failed_row_and_an_unknown_id(
    submit: Any, start_worker: StartWorker
) -> None:
    failed = await submit(chat("x", model="not-listed"), send=False)
    worker = start_worker("--job-id", str(failed))
    assert await worker.wait() == 1, worker.output

    unknown = start_worker("--job-id", str(uuid.uuid4()))
    assert await unknown.wait() == 2, unknown.output
    assert "job_not_found" in unknown.output


async def test_a_broken_models_file_is_a_clear_startup_error(
    tmp_path: Path, start_worker: StartWorker
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("model_list:\n  - model_name: x\n    litellm_params: {}\n")
    worker = start_worker("--drain", WORKER_MODELS_FILE=str(models))
    assert await worker.wait() == 2
    assert "model_list[0] needs `litellm_params.model`" in worker.output
    assert "Traceback" not in worker.output


async def test_migrate_is_idempotent_and_safe_to_run_concurrently() -> None:
    name = f"sw_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        env = {**os.environ, "DATABASE_URL": dsn}
        runs = [
            asyncio.to_thread(
                subprocess.run, worker_command("migrate"), env=env, capture_output=True, check=False
            )
            for _ in range(4)
        ]
        results = await asyncio.gather(*runs)
        assert [result.returncode for result in results] == [0, 0, 0, 0]
        conn = await asyncpg.connect(dsn)
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'ai_streaming%'"
                " ORDER BY tablename"
            )
        finally:
            await conn.close()
        assert [t["tablename"] for t in tables] == [
            "ai_streaming_job_deltas",
            "ai_streaming_jobs",
            "ai_streaming_worker_migrations",
        ]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
