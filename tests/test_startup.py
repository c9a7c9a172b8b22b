"""Starting without a usable database: one clear line, never a traceback, and a `run` that
waits for a PostgreSQL that comes up after it (contract section 6, issue: endings)."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest

from tests.conftest import StartWorker, chat, row
from tests.support import TcpProxy, eventually, free_port, worker_command
from tests.test_observability import get

SECRET = "hunter2-not-logged"


def migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_command("migrate"),
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("database_url", "code", "says"),
    [
        (
            f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/jobs",
            1,
            "cannot reach PostgreSQL at 127.0.0.1:",
        ),
        (
            f"postgresql://postgres:{SECRET}@127.0.0.1:5432/no_such_db_{uuid.uuid4().hex[:6]}",
            1,
            "has no database 'no_such_db_",
        ),
        (f"postgresql://postgres:{SECRET}@127.0.0.1:port/jobs", 2, "port that is not a number"),
        (f"mysql://root:{SECRET}@127.0.0.1/jobs", 2, "must look like postgresql://"),
    ],
    ids=["unreachable", "no-such-database", "bad-port", "not-postgres"],
)
def test_migrate_says_in_one_line_what_it_could_not_use(
    database_url: str, code: int, says: str
) -> None:
    result = migrate(database_url)
    assert result.returncode == code, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("streaming-worker migrate: ")
    assert says in line
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_run_gives_up_with_the_same_line_after_the_startup_timeout(
    start_worker: StartWorker,
) -> None:
    port = free_port()
    metrics = free_port()
    worker = start_worker(
        DATABASE_URL=f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/jobs",
        WORKER_STARTUP_TIMEOUT_S="4",
        WORKER_METRICS_PORT=str(metrics),
    )

    async def alive_not_ready() -> bool:
        try:
            health, ready = (
                await get(f"http://127.0.0.1:{metrics}/healthz"),
                await get(f"http://127.0.0.1:{metrics}/readyz"),
            )
        except OSError:
            return False
        return health[0] == 200 and ready[0] == 503

    await eventually(alive_not_ready, timeout_s=30, what="/healthz 200 and /readyz 503")
    assert await worker.wait(timeout_s=60) == 1
    output = worker.output
    assert "database_unreachable" in output
    assert f"streaming-worker run: cannot reach PostgreSQL at 127.0.0.1:{port}" in output
    assert SECRET not in output
    assert "Traceback" not in output


async def test_run_waits_for_a_database_that_comes_up_after_it(
    db: asyncpg.Connection,
    submit: Any,
    database_url: str,
    start_worker: StartWorker,
) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)  # not started: down
    proxied = database_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
    text = f"after the database {uuid.uuid4()}"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", DATABASE_URL=proxied, WORKER_STARTUP_TIMEOUT_S="60")

    await eventually(
        lambda: _async(worker.output.count("database_unreachable") >= 2),
        timeout_s=30,
        what="two failed connection attempts",
    )
    await proxy.start()
    try:
        assert await worker.wait(timeout_s=60) == 0, worker.output
    finally:
        await proxy.stop()
    assert (await row(db, job_id))["status"] == "completed"


async def _async(value: bool) -> bool:
    return value
