"""The PostgreSQL edge's `Database` handle, against the real database."""

from __future__ import annotations

import pytest

from worker.postgres import Database, DatabaseUnavailable


async def test_rows_come_back_as_dicts_and_values_as_values(database_url: str) -> None:
    async with await Database.connect(database_url) as db:
        rows = await db.fetch("SELECT n, n * 2 AS twice FROM generate_series(1, 2) AS n")
        assert rows == [{"n": 1, "twice": 2}, {"n": 2, "twice": 4}]
        assert await db.fetchrow("SELECT 1 AS one WHERE false") is None
        assert await db.fetchval("SELECT $1::int + 1", 41) == 42
        assert await db.execute("SELECT 1") == "SELECT 1"


async def test_an_unreachable_server_is_unavailable_without_the_password() -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        await Database.connect("postgresql://app:s3cret-pass@127.0.0.1:1/app", timeout_s=5)
    assert "s3cret-pass" not in str(raised.value)
