"""Where the run's WAL went: pg_waldump over the run's LSN range, summed by record type and
relation, then per job."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench import postgres
from worker.postgres import Database

_WALDUMP_LINE = re.compile(
    r"rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*?desc: (\S+)(?:.*?rel \d+/\d+/(\d+))?"
)


async def wal_profile(
    admin: Database, dsn: str, start: str | None, end: str | None
) -> dict[str, Any]:
    """WAL of the run by record type and relation, read back with pg_waldump: the profile
    that says where the bytes go (needs a superuser and the server's files on this host)."""
    waldump = _find_waldump()
    if waldump is None or start is None or end is None:
        return {"unavailable": "pg_waldump not found"}
    try:
        data_dir = await postgres.data_directory(admin)
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        return {"unavailable": f"data_directory: {error}"}
    process = await asyncio.create_subprocess_exec(
        str(waldump), "-p", f"{data_dir}/pg_wal", "-s", start, "-e", end,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    totals: Counter[tuple[str, str, str]] = Counter()
    counts: Counter[tuple[str, str, str]] = Counter()
    assert process.stdout is not None
    async for line in process.stdout:
        match = _WALDUMP_LINE.match(line.decode(errors="replace"))
        if match:
            rmgr, size, record, relfilenode = match.groups()
            key = (rmgr, record, relfilenode or "")
            totals[key] += int(size)
            counts[key] += 1
    stderr = (await process.communicate())[1].decode(errors="replace").strip()
    if not totals:
        return {"unavailable": stderr[:200] or "pg_waldump printed nothing"}
    names = await postgres.relation_names(dsn, {int(rel) for _, _, rel in totals if rel})
    return {
        "records": [
            {
                "record": f"{rmgr} {record}",
                "relation": names.get(rel, rel or None),
                "count": counts[(rmgr, record, rel)],
                "bytes": size,
            }
            for (rmgr, record, rel), size in totals.most_common()
        ]
    }


def _find_waldump() -> str | None:
    """pg_waldump from PATH, or Debian's newest server version's directory."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_waldump"), reverse=True)
    return shutil.which("pg_waldump") or (str(installed[0]) if installed else None)


def per_job(profile: dict[str, Any], jobs: int, *, top: int = 10) -> Any:
    """The biggest WAL items per job, and the rest summed."""
    if "records" not in profile:
        return profile
    records = profile["records"]
    shown = [
        {
            **item,
            "per_job": round(item["bytes"] / jobs),
            "bytes_each": item["bytes"] // item["count"],
        }
        for item in records[:top]
    ]
    rest = records[top:]
    if rest:
        shown.append(
            {
                "record": "other",
                "count": sum(item["count"] for item in rest),
                "bytes": sum(item["bytes"] for item in rest),
                "per_job": round(sum(item["bytes"] for item in rest) / jobs),
            }
        )
    return shown
