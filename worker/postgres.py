"""The PostgreSQL edge: the only module using asyncpg.

It opens the worker's pool and connections for the store (`worker/store.py`, the worker's
statements), says which errors mean "the database is unavailable", and offers `Database`, a
small handle for one-off queries by the tools around the worker (the app-side client, the
demo, the benchmark), which bring their own SQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

CONNECT_TIMEOUT_S = 10.0
# Names the worker's sessions in pg_stat_activity, for operators (and the fault tests).
APPLICATION_NAME = "streaming-worker"

# asyncpg's types, for the store's annotations (asyncpg ships no type information).
Pool: TypeAlias = asyncpg.Pool
Connection: TypeAlias = asyncpg.Connection
Record: TypeAlias = asyncpg.Record
# A flush retried while its first try still commits runs into that try's rows.
UniqueViolationError = asyncpg.UniqueViolationError

# What a lost connection, a restart or an administrator's terminate looks like to asyncpg.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.CannotConnectNowError,
    asyncpg.DeadlockDetectedError,
    # Seen when an administrator terminated the session mid-statement: asyncpg's protocol is
    # left "in another operation" and the connection must be replaced, not reused.
    asyncpg.InternalClientError,
)

_T = TypeVar("_T")


class DatabaseUnavailable(Exception):
    """The database could not be reached or dropped the connection; safe to retry.

    The message names the underlying error and the host, never the DSN's password.
    """


class DatabaseUrlInvalid(ValueError):
    """DATABASE_URL is not a PostgreSQL URL; the message says what is wrong, never the password."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a DSN points: everything an operator needs to check, and no password."""

    host: str
    port: int
    database: str
    user: str

    @classmethod
    def of(cls, dsn: str) -> Endpoint:
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            raise DatabaseUrlInvalid(
                "DATABASE_URL must look like postgresql://user:password@host:port/database"
            )
        try:
            port = parts.port or 5432
        except ValueError:
            raise DatabaseUrlInvalid("DATABASE_URL has a port that is not a number") from None
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or ["localhost"])[0]
        user = unquote(parts.username or "") or "postgres"
        return cls(host=host, port=port, database=parts.path.lstrip("/") or user, user=user)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}, database '{self.database}'"


# Refusals that name the cause better than "unavailable": the operator's configuration.
_NO_DATABASE = asyncpg.InvalidCatalogNameError
_REFUSED_LOGIN = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


def explain(endpoint: Endpoint, exc: BaseException) -> str:
    """One sentence: what could not be reached, why, and what to check."""
    if isinstance(exc, _NO_DATABASE):
        return (
            f"PostgreSQL at {endpoint.host}:{endpoint.port} has no database "
            f"'{endpoint.database}': create it, or fix the database in DATABASE_URL"
        )
    if isinstance(exc, _REFUSED_LOGIN):
        return (
            f"PostgreSQL at {endpoint} refused user '{endpoint.user}' ({exc}): "
            "check the user and password in DATABASE_URL"
        )
    reason = str(exc) or type(exc).__name__
    return (
        f"cannot reach PostgreSQL at {endpoint} ({reason}): check that the server is running "
        "and that DATABASE_URL names the right host and port"
    )


async def create_pool(dsn: str, *, max_size: int) -> Pool:
    """The worker's pool: sessions named `streaming-worker`, no reset query on release.

    Raises DatabaseUrlInvalid for a malformed DATABASE_URL, and DatabaseUnavailable with a
    sentence naming host, port and database (never the password) when it cannot connect.
    """
    endpoint = Endpoint.of(dsn)
    try:
        pool: Pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            reset=_keep_session,
            server_settings={"application_name": APPLICATION_NAME},
            timeout=CONNECT_TIMEOUT_S,
        )
    except (*CONNECTION_ERRORS, _NO_DATABASE, *_REFUSED_LOGIN) as exc:
        raise DatabaseUnavailable(explain(endpoint, exc)) from None
    return pool


async def connect(dsn: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
    """One dedicated connection named `streaming-worker` (the writer's)."""
    return await asyncpg.connect(
        dsn, timeout=timeout_s, server_settings={"application_name": APPLICATION_NAME}
    )


async def _keep_session(conn: Connection) -> None:
    """Skip the pool's reset query (four statements on every release): nothing here leaves
    session state behind (no LISTEN, cursors, SET or session advisory locks), and asyncpg
    still rolls back an open transaction before calling this."""


class Database:
    """One connection for a tool's own queries; rows come back as dicts.

    Connection errors, at connect or on a query, surface as `DatabaseUnavailable`; every
    other database error (a missing table, a constraint) passes through as asyncpg's own.
    Use as `async with await Database.connect(dsn) as db: ...`, or call `close()`.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        application_name: str = APPLICATION_NAME,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> Database:
        conn = await _unavailable_on_error(
            lambda: asyncpg.connect(
                dsn, timeout=timeout_s, server_settings={"application_name": application_name}
            )
        )
        return cls(conn)

    async def fetch(self, query: str, *args: object) -> list[dict[str, Any]]:
        rows = await _unavailable_on_error(lambda: self._conn.fetch(query, *args))
        return [dict(row) for row in rows]

    async def fetchrow(self, query: str, *args: object) -> dict[str, Any] | None:
        row = await _unavailable_on_error(lambda: self._conn.fetchrow(query, *args))
        return None if row is None else dict(row)

    async def fetchval(self, query: str, *args: object) -> Any:
        return await _unavailable_on_error(lambda: self._conn.fetchval(query, *args))

    async def execute(self, query: str, *args: object) -> str:
        """Run a statement; returns its status tag (`UPDATE 1`)."""
        status: str = await _unavailable_on_error(lambda: self._conn.execute(query, *args))
        return status

    async def close(self) -> None:
        """Close politely; a connection that is already broken is simply dropped."""
        try:
            await self._conn.close(timeout=5)
        except CONNECTION_ERRORS:
            self._conn.terminate()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def _unavailable_on_error(call: Callable[[], Awaitable[_T]]) -> _T:
    try:
        return await call()
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
