"""The worker's statements: the schema, claims, the batched and fenced writes, the sweeps.

Connections come from `worker/postgres.py`, the PostgreSQL edge; the app-side queries live
with the client (`worker/client/queries.py`).
"""

from __future__ import annotations

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


# One statement claims a whole batch. A job is claimable when `pending`, or when its lease
# ran out (its worker vanished) or is the one `restart` names (this worker's broken attempt).
# Each claim carries its own lease token, so a batch retried after a lost connection finds
# the claims that did commit (`ours`) and never counts an attempt twice; a job named twice
# in one batch is claimed by only one of them. The outer SELECT sees the rows as they were
# before the statement: it reports why a claim was refused.
_CLAIM = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::float8[])
        WITH ORDINALITY AS b(id, lease, message_id, restart, lease_s, ord)
),
claimed AS (
    UPDATE ai_streaming_jobs j
    SET status = 'processing', attempts = j.attempts + 1, partial_content = '',
        reasoning_content = '', content_seq = 0, lease_token = b.lease,
        lease_message_id = b.message_id,
        lease_expires_at = now() + make_interval(secs => b.lease_s), requeued_at = NULL,
        started_at = coalesce(j.started_at, now()), updated_at = now(),
        response_data = NULL, error_code = NULL, error_message = NULL, completed_at = NULL
    FROM batch b
    WHERE j.id = b.id
      AND (j.status = 'pending'
           OR (j.status IN ('processing', 'streaming')
               AND (j.lease_expires_at < now() OR j.lease_token = b.restart)))
    RETURNING j.id, j.lease_token, j.attempts
),
-- A job the app cancelled before any worker ended it still gets its ending filled in.
settled AS (
    UPDATE ai_streaming_jobs j
    SET completed_at = coalesce(j.completed_at, now()),
        response_data = coalesce(j.response_data, jsonb_build_object(
            'model', NULL, 'provider', NULL, 'finish_reason', 'cancelled', 'usage', NULL,
            'cost_usd', NULL, 'ttft_ms', NULL, 'duration_ms', NULL, 'attempts', j.attempts))
    FROM batch b
    WHERE j.id = b.id AND j.status = 'cancelled'
      AND (j.completed_at IS NULL OR j.response_data IS NULL)
)
SELECT c.attempts AS claimed_attempts, j.lease_token = b.lease AS ours, j.attempts,
       j.status, j.request_data::text, j.lease_message_id,
       j.status = 'pending' OR (j.status IN ('processing', 'streaming')
           AND (j.lease_expires_at < now() OR j.lease_token = b.restart)) AS claimable,
       greatest(extract(epoch FROM j.lease_expires_at - now()), 0)::float8 AS lease_left_s
FROM batch b
LEFT JOIN ai_streaming_jobs j ON j.id = b.id
LEFT JOIN claimed c ON c.id = b.id AND c.lease_token = b.lease
ORDER BY b.ord
"""

# Jobs whose worker died (their lease ran out), restarted by a live worker with free slots:
# attempts + 1 and the text reset, as a claim does, under lease tokens the caller made, so
# that a retry after a lost connection finds the jobs its lost try took (`mine`) instead of
# counting them again. SKIP LOCKED: workers sweeping at once take different jobs.
_TAKE_OVER = """
WITH tokens AS (
    SELECT token, n FROM unnest($1::uuid[]) WITH ORDINALITY AS t(token, n)
),
mine AS (
    SELECT id, attempts, lease_token, request_data FROM ai_streaming_jobs
    WHERE lease_token = ANY($1::uuid[]) AND status IN ('processing', 'streaming')
),
unused AS (
    SELECT token, row_number() OVER (ORDER BY n) AS n FROM tokens
    WHERE token NOT IN (SELECT lease_token FROM mine)
),
expired AS (
    SELECT id, row_number() OVER (ORDER BY lease_expires_at) AS n FROM (
        SELECT id, lease_expires_at FROM ai_streaming_jobs
        WHERE lease_expires_at < now() AND status IN ('processing', 'streaming')
        ORDER BY lease_expires_at
        LIMIT (SELECT count(*) FROM unused)
        FOR UPDATE SKIP LOCKED
    ) e
),
taken AS (
    UPDATE ai_streaming_jobs j
    SET status = 'processing', attempts = j.attempts + 1, partial_content = '',
        reasoning_content = '', content_seq = 0, lease_token = u.token,
        lease_message_id = NULL, lease_expires_at = now() + make_interval(secs => $2),
        requeued_at = NULL, updated_at = now()
    FROM expired e JOIN unused u ON u.n = e.n
    WHERE j.id = e.id
    RETURNING j.id, j.attempts, j.lease_token, j.request_data
)
SELECT id, attempts, lease_token, request_data::text FROM taken
UNION ALL
SELECT id, attempts, lease_token, request_data::text FROM mine
"""

# Jobs whose worker vanished and whose message is gone too (deleted, dead-lettered): the
# lease ran out long ago and nothing claimed them since. Send them again, or fail them once
# they have been started `max_attempts` times.
_SWEEP_ORPHANS = """
WITH orphans AS (
    SELECT id FROM ai_streaming_jobs
    WHERE status IN ('processing', 'streaming')
      AND lease_expires_at < now() - make_interval(secs => $1)
      AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => $1))
    ORDER BY lease_expires_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
UPDATE ai_streaming_jobs j
SET requeued_at = now(),
    status = CASE WHEN j.attempts >= $2 THEN 'failed' ELSE j.status END,
    error_code = CASE WHEN j.attempts >= $2 THEN 'internal' END,
    error_message = CASE WHEN j.attempts >= $2
        THEN 'the job was started ' || j.attempts || ' times and never finished' END,
    completed_at = CASE WHEN j.attempts >= $2 THEN now() END,
    lease_expires_at = CASE WHEN j.attempts >= $2 THEN NULL ELSE j.lease_expires_at END,
    updated_at = CASE WHEN j.attempts >= $2 THEN now() ELSE j.updated_at END
FROM orphans o
WHERE j.id = o.id
RETURNING j.id, j.status
"""

# One statement per flush for every job at once. Each job's new text becomes one delta row,
# inserted only while the job's lease is still this attempt's, and only if a batch retried
# after an ambiguous failure did not insert it already. (Not ON CONFLICT DO NOTHING: its
# speculative insertion logs a 48-byte confirmation record per row, a fifth of a delta's
# WAL. The rare retry that races its own lost first try fails on the key and goes again.)
# The job's row is written only when something about it changes (status, a `partial_content`
# refresh, the lease), and a refresh is fenced by `content_seq` so that it too applies once.
# The final SELECT reports every job's state *before* the statement: "already applied" vs
# "cancelled by the app" vs "claimed by another worker".
_FLUSH = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[], $5::text[],
                         $6::text[], $7::int[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::bool[], $14::bool[], $15::text[],
                         $16::text[]) WITH ORDINALITY
        AS b(id, lease, attempt, seq, delta, refresh, refresh_from, status, response_data,
             error_code, error_message, touch, renew, reasoning, refresh_reasoning, ord)
),
current AS (
    SELECT b.ord, j.id, j.status, j.lease_token = b.lease AS leased, j.content_seq,
           j.lease_token = b.lease AND j.status IN ('processing', 'streaming') AS active
    FROM batch b LEFT JOIN ai_streaming_jobs j ON j.id = b.id
),
inserted AS (
    INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)
    SELECT b.id, b.attempt, b.seq, b.delta, b.reasoning
    FROM batch b JOIN current c ON c.ord = b.ord
    WHERE c.active AND (b.delta <> '' OR b.reasoning IS NOT NULL)
      AND NOT EXISTS (SELECT FROM ai_streaming_job_deltas d
                      WHERE d.job_id = b.id AND d.attempt = b.attempt AND d.seq = b.seq)
),
updated AS (
    UPDATE ai_streaming_jobs j
    SET status = coalesce(b.status, j.status),
        partial_content = CASE WHEN b.refresh IS NULL THEN j.partial_content
                               ELSE j.partial_content || b.refresh END,
        reasoning_content = CASE WHEN b.refresh_reasoning IS NULL THEN j.reasoning_content
                                 ELSE j.reasoning_content || b.refresh_reasoning END,
        content_seq = CASE WHEN b.refresh IS NULL THEN j.content_seq ELSE b.seq END,
        updated_at = CASE WHEN b.refresh IS NOT NULL OR b.status IS NOT NULL
                          THEN now() ELSE j.updated_at END,
        lease_expires_at = CASE WHEN b.status IN ('completed', 'failed', 'pending') THEN NULL
                                WHEN b.renew THEN now() + make_interval(secs => $13)
                                ELSE j.lease_expires_at END,
        response_data = coalesce(b.response_data::jsonb, j.response_data),
        error_code = coalesce(b.error_code, j.error_code),
        error_message = coalesce(b.error_message, j.error_message),
        completed_at = CASE WHEN b.status IN ('completed', 'failed') THEN now()
                            ELSE j.completed_at END
    FROM batch b
    WHERE b.touch AND j.id = b.id AND j.lease_token = b.lease
      AND j.status IN ('processing', 'streaming')
      AND (b.refresh IS NULL OR j.content_seq = b.refresh_from)
    RETURNING j.id
)
SELECT c.status, coalesce(c.leased, false) AS leased, c.content_seq, u.id IS NOT NULL AS updated
FROM current c LEFT JOIN updated u ON u.id = c.id
ORDER BY c.ord
"""

# A cancelled row keeps its status; the worker fills in what the app left empty, and its
# text catches up with what streamed before the stop, once: the attempt's last delta is
# inserted (unless a retry already did) and the row's text refreshed where it still holds
# `refresh_from` deltas' text (a retry finds `content_seq` moved on and appends nothing).
_SETTLE_CANCELLED = """
WITH mine AS (
    SELECT id, content_seq FROM ai_streaming_jobs
    WHERE id = $1 AND lease_token = $2 AND status = 'cancelled'
    FOR UPDATE
),
inserted AS (
    INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)
    SELECT $1, $4, $5, $6, $7 FROM mine
    WHERE ($6 <> '' OR $7::text IS NOT NULL)
      AND NOT EXISTS (SELECT FROM ai_streaming_job_deltas d
                      WHERE d.job_id = $1 AND d.attempt = $4 AND d.seq = $5)
)
UPDATE ai_streaming_jobs j
SET completed_at = coalesce(j.completed_at, now()),
    response_data = coalesce(j.response_data, $3::jsonb), lease_expires_at = NULL,
    partial_content = CASE WHEN m.content_seq = $8 THEN j.partial_content || $9
                           ELSE j.partial_content END,
    reasoning_content = CASE WHEN m.content_seq = $8 THEN j.reasoning_content || $10
                             ELSE j.reasoning_content END,
    content_seq = CASE WHEN m.content_seq = $8 THEN $5 ELSE j.content_seq END,
    updated_at = now()
FROM mine m
WHERE j.id = m.id
"""

_PURGE_DELTAS = """
DELETE FROM ai_streaming_job_deltas d
USING ai_streaming_jobs j
WHERE d.job_id = j.id AND j.completed_at < now() - make_interval(secs => $1)
"""


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
        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential_jitter(multiplier=0.1, max=2),
            stop=stop_after_delay(_CLAIM_RETRY_S),
            reraise=True,
        ):
            with retry:
                return await self._claims.submit(request)
        raise AssertionError("unreachable: AsyncRetrying reraises the last error")

    async def _claim_batch(self, requests: Sequence[_ClaimRequest]) -> list[Claim | ClaimRefused]:
        async with self._pooled() as conn:
            rows = await conn.fetch(
                _CLAIM,
                [request.job_id for request in requests],
                [request.lease for request in requests],
                [request.message_id for request in requests],
                [request.restart for request in requests],
                [request.lease_s for request in requests],
                timeout=_STATEMENT_TIMEOUT_S,
            )
        return [_claim_result(row, request) for row, request in zip(rows, requests, strict=True)]

    async def take_over(self, limit: int, *, lease_s: float) -> list[Claim]:
        """Restart up to `limit` jobs whose lease ran out; retry-safe (see _TAKE_OVER)."""
        tokens = [uuid.uuid4() for _ in range(limit)]
        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential_jitter(multiplier=0.1, max=2),
            stop=stop_after_delay(_CLAIM_RETRY_S),
            reraise=True,
        ):
            with retry:
                async with self._pooled() as conn:
                    rows = await conn.fetch(
                        _TAKE_OVER, tokens, lease_s, timeout=_STATEMENT_TIMEOUT_S
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
            rows = await conn.fetch(_SWEEP_ORPHANS, orphaned_after_s, max_attempts)
        return [(row["id"], Status(row["status"])) for row in rows]

    async def write_flush(self, items: Sequence[FlushItem], *, lease_s: float) -> list[FlushResult]:
        """Commit one flush in a single statement; results come in the items' order.

        Retry-safe as a whole. At most one item per job: one attempt owns a job at a time.
        """
        async with self._writer_connection() as conn:
            with _retry_on_conflict():
                rows = await conn.fetch(
                    _FLUSH,
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
                    _SETTLE_CANCELLED,
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
            result = await conn.execute(_PURGE_DELTAS, retention_s)
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
        try:
            if self._writer_conn is None or self._writer_conn.is_closed():
                self._writer_conn = await connect(self._dsn, timeout_s=CONNECT_TIMEOUT_S)
            yield self._writer_conn
        except CONNECTION_ERRORS as exc:
            conn, self._writer_conn = self._writer_conn, None
            if conn is not None:
                conn.terminate()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


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
