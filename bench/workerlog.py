"""Follows a worker's JSON log: when it started, which jobs it claimed and ended."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

TERMINAL_EVENTS = frozenset({"job_completed", "job_failed", "job_cancelled", "job_already_ended"})


class WorkerLog:
    """Follows one worker's JSON log lines: start, claims, ends, warnings."""

    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = path.open("rb")
        self._rest = b""
        self.started_at: float | None = None
        self.first_claim_at: float | None = None
        self.claimed: set[str] = set()
        self.ended: dict[str, str] = {}
        self.problems: Counter[str] = Counter()

    def poll(self) -> None:
        lines = (self._rest + self._file.read()).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self._event(json.loads(line))

    def _event(self, record: dict[str, Any]) -> None:
        event, job_id = record.get("event"), record.get("job_id")
        if event == "worker_started" and self.started_at is None:
            self.started_at = _epoch(record.get("timestamp"))
        elif event == "job_claimed" and job_id:
            self.claimed.add(job_id)
            if self.first_claim_at is None:
                self.first_claim_at = _epoch(record.get("timestamp"))
        elif event in TERMINAL_EVENTS and job_id:
            self.ended[job_id] = str(event)
        if record.get("level") in ("warning", "error", "critical"):
            self.problems[str(event)] += 1

    def forget_jobs(self) -> None:
        """Start counting claims and ends afresh (after the pickup probes)."""
        self.first_claim_at = None
        self.claimed.clear()
        self.ended.clear()

    def close(self) -> None:
        self._file.close()


def _epoch(timestamp: object) -> float | None:
    if not isinstance(timestamp, str):
        return None
    with contextlib.suppress(ValueError):
        return dt.datetime.fromisoformat(timestamp).timestamp()
    return None


def started(log: WorkerLog) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        log.poll()
        return log.started_at is not None

    return probe
