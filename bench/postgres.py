"""Every query the benchmark runs: its throwaway database, the rows it writes as the app does,
the results it reads back, and the server's counters (transactions, WAL, backends).

All of it goes through the worker's PostgreSQL edge (`worker.postgres.Database`), so the
benchmark needs no asyncpg of its own. Counters are read from the admin database, so that
these queries are not counted against the bench database.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.stats import JobRow
from worker.postgres import Database

APPLICATION_NAME = "streaming-worker-bench"
# Marks the idle-pickup probes' rows, which the run's results leave out.
PICKUP_USER = "bench-pickup"


async def connect(dsn: str) -> Database:
    return await Database.connect(dsn, application_name=APPLICATION_NAME)


async def create_bench_database(admin: Database) -> str:
    """A fresh `sw_bench_*` database on the admin connection's server; returns its name."""
    name = f"sw_bench_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    return name


async def drop_database(admin: Database, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_in(dsn: str, name: str) -> str:
    """The same server's DSN, for database `name`."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def insert_jobs(dsn: str, requests: Sequence[dict[str, Any]]) -> list[str]:
    """The run's job rows, written as the app does; their ids in the requests' order."""
    async with await connect(dsn) as db:
        inserted = await db.fetch(
            "INSERT INTO ai_streaming_jobs (user_id, request_data)"
            " SELECT u, r::jsonb FROM unnest($1::text[], $2::text[]) AS t(u, r)"
            " RETURNING id::text, user_id",
            [str(i) for i in range(len(requests))],
            [json.dumps(request) for request in requests],
        )
    return [row["id"] for row in sorted(inserted, key=lambda r: int(r["user_id"]))]


async def insert_probes(db: Database, requests: Sequence[dict[str, Any]]) -> list[str]:
    """The idle-pickup probes' rows (tagged `PICKUP_USER`); their ids."""
    rows = await db.fetch(
        "INSERT INTO ai_streaming_jobs (user_id, request_data)"
        " SELECT $1, r::jsonb FROM unnest($2::text[]) AS t(r) RETURNING id::text",
        PICKUP_USER,
        [json.dumps(request) for request in requests],
    )
    return [row["id"] for row in rows]


async def probes_started_at(db: Database) -> dict[str, float]:
    """When each probe was claimed (epoch seconds), by id."""
    rows = await db.fetch(
        "SELECT id::text, extract(epoch FROM started_at)::float8 AS started_at"
        " FROM ai_streaming_jobs WHERE user_id = $1",
        PICKUP_USER,
    )
    return {row["id"]: row["started_at"] for row in rows}


async def results(dsn: str) -> tuple[list[JobRow], dict[str, list[tuple[int, float]]]]:
    """Every job row, and each job's deltas of its last attempt (length, created_at)."""
    async with await connect(dsn) as db:
        rows = await db.fetch(
            "SELECT user_id, id::text, status, attempts,"
            " extract(epoch FROM started_at)::float8 AS started_at,"
            " extract(epoch FROM completed_at)::float8 AS completed_at,"
            " octet_length(partial_content) AS text_bytes,"
            " encode(sha256(convert_to(partial_content, 'UTF8')), 'hex') AS text_sha256"
            " FROM ai_streaming_jobs WHERE user_id <> $1",
            PICKUP_USER,
        )
        delta_rows = await db.fetch(
            "SELECT d.job_id::text, char_length(d.content) AS chars,"
            " extract(epoch FROM d.created_at)::float8 AS created_at"
            " FROM ai_streaming_job_deltas d"
            " JOIN ai_streaming_jobs j ON j.id = d.job_id AND d.attempt = j.attempts"
            " WHERE j.user_id <> $1 ORDER BY d.job_id, d.seq",
            PICKUP_USER,
        )
    jobs = [
        JobRow(
            index=int(r["user_id"]),
            job_id=r["id"],
            status=r["status"],
            attempts=r["attempts"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            text_bytes=r["text_bytes"],
            text_sha256=r["text_sha256"],
        )
        for r in rows
    ]
    deltas: dict[str, list[tuple[int, float]]] = {}
    for r in delta_rows:
        deltas.setdefault(r["job_id"], []).append((r["chars"], r["created_at"]))
    return jobs, deltas


async def relation_names(dsn: str, relfilenodes: set[int]) -> dict[str, str]:
    """Table and index names by relfilenode (as pg_waldump names relations)."""
    async with await connect(dsn) as db:
        rows = await db.fetch(
            "SELECT relfilenode, relname FROM pg_class WHERE relfilenode = ANY($1::oid[])",
            sorted(relfilenodes),
        )
    return {str(row["relfilenode"]): row["relname"] for row in rows}


@dataclass(frozen=True)
class WalState:
    lsn: str
    # Full-page images follow every checkpoint: they explain most run-to-run WAL variance.
    full_page_images: int
    checkpoints: int


async def wal_state(admin: Database) -> WalState:
    return WalState(
        lsn=await admin.fetchval("SELECT pg_current_wal_lsn()::text"),
        full_page_images=await admin.fetchval("SELECT wal_fpi FROM pg_stat_wal"),
        checkpoints=await admin.fetchval(
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        ),
    )


async def wal_bytes(admin: Database, start: str | None, end: str | None) -> int | None:
    """WAL written between two LSNs, cluster-wide."""
    value: int | None = await admin.fetchval(
        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint", end, start
    )
    return value


async def backend_pids(admin: Database, db_name: str) -> list[int]:
    """The client backends connected to database `db_name` (the workers' sessions)."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        db_name,
    )
    return [row["pid"] for row in rows]


async def transactions(admin: Database, db_name: str) -> tuple[int, int]:
    """Transactions so far: (the bench database, other databases but the admin one)."""
    row = await admin.fetchrow(
        "SELECT coalesce(sum(xact_commit + xact_rollback) FILTER (WHERE datname = $1), 0)"
        " AS bench,"
        " coalesce(sum(xact_commit + xact_rollback)"
        "          FILTER (WHERE datname <> $1 AND datname <> current_database()), 0) AS others"
        " FROM pg_stat_database",
        db_name,
    )
    assert row is not None  # an aggregate always returns a row
    return int(row["bench"]), int(row["others"])


async def server_version(admin: Database) -> str:
    version: str = await admin.fetchval("SHOW server_version")
    return version


async def data_directory(admin: Database) -> str:
    directory: str = await admin.fetchval("SHOW data_directory")
    return directory
