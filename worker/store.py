"""The worker's store: migrations, claims and takeovers, the batched and fenced flushes, the
sweeps, and the values they exchange with the core.

The statements are in `worker/sql.py`, the schema in `worker/schema.py`; connections come
from `worker/postgres.py`, the PostgreSQL edge; the app-side queries live with the client
(`worker/client/queries.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from worker import sql
from worker.batching import Batcher
from worker.jobs import Claim, Status
from worker.postgres import (
    CONNECT_TIMEOUT_S,
    CONNECTION_ERRORS,
    Connection,
    DatabaseUnavailable,
    Pool,
    Record,
    UniqueViolationError,
    connect,
    create_pool,
)
from worker.schema import MIGRATIONS

_STATEMENT_TIMEOUT_S = 30.0
_CLAIM_RETRY_S = 30.0
_CLAIM_BATCH = 100
# How often a claim that lost a race asks again (the second look shows who won).
_CLAIM_RACES = 3
# Serialises concurrent `migrate` runs (several workers starting at once).
_MIGRATION_LOCK_ID = 0x5357_4D49  # "SWMI"


class StoreUnavailable(DatabaseUnavailable):
    """The database could not be reached or dropped the connection; safe to retry."""


@dataclass(frozen=True, slots=True)
class ClaimRefused:
    """Why a job could not be claimed: no row (no status), already ended, or leased to a live
    attempt."""

    status: Status | None = None
    lease_left_s: float = 0.0
    leased_by_message: str | None = None
    # Another claim took the row while this one was being made: ask again to see the winner.
    contended: bool = False

    @property
    def exists(self) -> bool:
        return self.status is not None


@dataclass(frozen=True, slots=True)
class _ClaimRequest:
    job_id: uuid.UUID
    lease: uuid.UUID
    message_id: str | None
    restart: uuid.UUID | None
    lease_s: float


@dataclass(frozen=True, slots=True)
class FlushItem:
    """One job's share of a flush: a delta numbered `seq` if it has new text, and a row
    update if there is a status, a refresh or a lease to `renew`; `refresh` is appended to
    `partial_content` where it held `refresh_from` deltas' text."""

    job_id: uuid.UUID
    lease: uuid.UUID
    attempt: int
    seq: int
    delta: str
    refresh: str | None
    refresh_from: int
    status: Status | None
    response_data: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    renew: bool
    # The reasoning text this delta adds (None when none), and what a refresh appends to
    # `reasoning_content` (None when nothing, or no refresh).
    reasoning: str | None = None
    refresh_reasoning: str | None = None

    @property
    def touch(self) -> bool:
        """The job's row is written, not only read."""
        return self.status is not None or self.refresh is not None or self.renew


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What the database said about one item: `applied`, or the row's state that refused it."""

    job_id: uuid.UUID
    applied: bool
    status: Status | None
    leased: bool

    @property
    def cancelled(self) -> bool:
        return not self.applied and self.leased and self.status is Status.CANCELLED


class JobStore:
    """Claims jobs (pooled connections) and writes flushes (one dedicated connection)."""

    def __init__(self, pool: Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._writer_conn: Connection | None = None
        self._writer_lock = asyncio.Lock()
        self._claims: Batcher[_ClaimRequest, Claim | ClaimRefused] = Batcher(
            self._claim_batch,
            max_size=_CLAIM_BATCH,
            interrupted=lambda: StoreUnavailable("claim interrupted"),
        )

    @classmethod
    async def connect(cls, dsn: str, *, pool_size: int = 4) -> JobStore:
        return cls(await create_pool(dsn, max_size=pool_size), dsn)

    async def close(self) -> None:
        if self._writer_conn is not None:
            await self._writer_conn.close(timeout=5)
            self._writer_conn = None
        await self._pool.close()

    async def migrate(self) -> int:
        """Apply pending migrations; returns how many ran. Safe to run concurrently."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS ai_streaming_worker_migrations"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM ai_streaming_worker_migrations"
            )
            for version, sql in enumerate(MIGRATIONS[done:], start=done + 1):
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO ai_streaming_worker_migrations (version) VALUES ($1)", version
                )
            return len(MIGRATIONS) - int(done)

    async def ping(self) -> None:
        async with self._pooled() as conn:
            await conn.fetchval("SELECT 1")

    async def claim(
        self,
        job_id: uuid.UUID,
        *,
        message_id: str | None,
        lease_s: float,
        restart: uuid.UUID | None = None,
    ) -> Claim | ClaimRefused:
        """Start a new attempt (attempts + 1, text reset) unless the job is ended or leased.

        `restart` is the lease of this worker's own broken attempt, which it may take over.
        Claims made at the same time share one statement. Retried across lost connections
        without ever counting one attempt twice.
        """
        request = _ClaimRequest(job_id, uuid.uuid4(), message_id, restart, lease_s)
        for _ in range(_CLAIM_RACES):
            result = await self._claim_retrying(request)
            if not (isinstance(result, ClaimRefused) and result.contended):
                break
        return result

    async def _claim_retrying(self, request: _ClaimRequest) -> Claim | ClaimRefused:
        async for retry in _claim_retries():
            with retry:
                return await self._claims.submit(request)
        raise AssertionError("unreachable: AsyncRetrying reraises the last error")

    async def _claim_batch(self, requests: Sequence[_ClaimRequest]) -> list[Claim | ClaimRefused]:
        async with self._pooled() as conn:
            rows = await conn.fetch(
                sql.CLAIM,
                [request.job_id for request in requests],
                [request.lease for request in requests],
                [request.message_id for request in requests],
                [request.restart for request in requests],
                [request.lease_s for request in requests],
                timeout=_STATEMENT_TIMEOUT_S,
            )
        return [_claim_result(row, request) for row, request in zip(rows, requests, strict=True)]

    async def take_over(self, limit: int, *, lease_s: float) -> list[Claim]:
        """Restart up to `limit` jobs whose lease ran out; retry-safe (see sql.TAKE_OVER)."""
        tokens = [uuid.uuid4() for _ in range(limit)]
        async for retry in _claim_retries():
            with retry:
                async with self._pooled() as conn:
                    rows = await conn.fetch(
                        sql.TAKE_OVER, tokens, lease_s, timeout=_STATEMENT_TIMEOUT_S
                    )
        return [
            Claim(
                job_id=row["id"],
                attempt=row["attempts"],
                lease=row["lease_token"],
                request_data=json.loads(row["request_data"]),
            )
            for row in rows
        ]

    async def sweep_orphans(
        self, *, orphaned_after_s: float, max_attempts: int
    ) -> list[tuple[uuid.UUID, Status]]:
        """Mark jobs whose worker and message both vanished; returns (id, status) of each.

        `processing`/`streaming` ones need a fresh message; `failed` ones hit the limit.
        """
        async with self._pooled() as conn:
            rows = await conn.fetch(sql.SWEEP_ORPHANS, orphaned_after_s, max_attempts)
        return [(row["id"], Status(row["status"])) for row in rows]

    async def write_flush(self, items: Sequence[FlushItem], *, lease_s: float) -> list[FlushResult]:
        """Commit one flush in a single statement; results come in the items' order.

        Retry-safe as a whole. At most one item per job: one attempt owns a job at a time.
        """
        async with self._writer_connection() as conn:
            with _retry_on_conflict():
                rows = await conn.fetch(
                    sql.FLUSH,
                    [item.job_id for item in items],
                    [item.lease for item in items],
                    [item.attempt for item in items],
                    [item.seq for item in items],
                    [item.delta for item in items],
                    [item.refresh for item in items],
                    [item.refresh_from for item in items],
                    [None if item.status is None else item.status.value for item in items],
                    [_json_or_none(item.response_data) for item in items],
                    [item.error_code for item in items],
                    [item.error_message for item in items],
                    [item.touch for item in items],
                    lease_s,
                    [item.renew for item in items],
                    [item.reasoning for item in items],
                    [item.refresh_reasoning for item in items],
                    timeout=_STATEMENT_TIMEOUT_S,
                )
        return [_flush_result(row, item) for row, item in zip(rows, items, strict=True)]

    async def settle_cancelled(self, tail: FlushItem, response_data: dict[str, Any]) -> None:
        """End this attempt's part in a job the app cancelled: `tail` is its text not yet
        committed (as the next delta, and as the refresh of the row's text). Retry-safe."""
        async with self._writer_connection() as conn:
            with _retry_on_conflict():
                await conn.execute(
                    sql.SETTLE_CANCELLED,
                    tail.job_id,
                    tail.lease,
                    json.dumps(response_data),
                    tail.attempt,
                    tail.seq,
                    tail.delta,
                    tail.reasoning,
                    tail.refresh_from,
                    tail.refresh or "",
                    tail.refresh_reasoning or "",
                    timeout=_STATEMENT_TIMEOUT_S,
                )

    async def purge_deltas(self, *, retention_s: float) -> int:
        async with self._pooled() as conn:
            result = await conn.execute(sql.PURGE_DELTAS, retention_s)
        return int(result.split()[-1])

    @contextlib.asynccontextmanager
    async def _pooled(self) -> AsyncIterator[Connection]:
        """A pooled connection; losing it surfaces as StoreUnavailable (the pool reconnects)."""
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                yield conn
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _writer_connection(self) -> AsyncIterator[Connection]:
        """The writer's own connection; a failure drops it and surfaces as StoreUnavailable.

        Dedicated rather than pooled: a pool runs four reset statements on every release,
        which would be four extra round trips on every flush.
        """
        # One statement at a time: a cancelled job's settling and a flush would otherwise meet
        # on the one connection ("another operation is in progress"), and the error handling
        # below would close it under the other statement.
        async with self._writer_lock:
            try:
                if self._writer_conn is None or self._writer_conn.is_closed():
                    self._writer_conn = await connect(self._dsn, timeout_s=CONNECT_TIMEOUT_S)
                yield self._writer_conn
            except CONNECTION_ERRORS as exc:
                conn, self._writer_conn = self._writer_conn, None
                if conn is not None:
                    conn.terminate()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _claim_retries() -> AsyncRetrying:
    """Claims and takeovers are retry-safe: they retry across lost connections for a while."""
    return AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_exponential_jitter(multiplier=0.1, max=2),
        stop=stop_after_delay(_CLAIM_RETRY_S),
        reraise=True,
    )


@contextlib.contextmanager
def _retry_on_conflict() -> Iterator[None]:
    """A retried flush that ran into its own first try, still committing on a lost
    connection: the next retry sees those deltas and skips them."""
    try:
        yield
    except UniqueViolationError as exc:
        raise StoreUnavailable(f"flush raced its own retry: {exc}") from exc


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _claim_result(row: Record, request: _ClaimRequest) -> Claim | ClaimRefused:
    attempt = row["claimed_attempts"]
    if attempt is None and row["ours"]:
        attempt = row["attempts"]  # a retried batch: this very claim committed before
    if attempt is not None:
        return Claim(
            job_id=request.job_id,
            attempt=attempt,
            lease=request.lease,
            request_data=json.loads(row["request_data"]),
        )
    if row["status"] is None:
        return ClaimRefused()
    return ClaimRefused(
        status=Status(row["status"]),
        lease_left_s=row["lease_left_s"] or 0.0,
        leased_by_message=row["lease_message_id"],
        contended=bool(row["claimable"]),
    )


def _flush_result(row: Record, item: FlushItem) -> FlushResult:
    status = None if row["status"] is None else Status(row["status"])
    leased = bool(row["leased"])
    if leased and status in (Status.PROCESSING, Status.STREAMING):
        # A row update that did not apply although the lease is ours: only a retried batch
        # whose refresh already committed does that, and then the row shows its seq.
        applied = not item.touch or bool(row["updated"]) or row["content_seq"] == item.seq
    else:
        # The same batch committed before and ended the attempt: this is its retry.
        applied = leased and item.status is not None and status is item.status
    return FlushResult(job_id=item.job_id, applied=applied, status=status, leased=leased)
