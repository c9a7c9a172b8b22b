"""The worker's job slots (`WORKER_CONCURRENCY`), and the jobs parked beyond them.

A running job holds a slot. A job that waits for its provider's own limit (a models-file
`max_parallel_requests`, `rpm` or `tpm`) gives its slot back while it waits, so that a
backlog for one provider does not stop the jobs of every other model; at most
`max_parked` jobs wait so, beyond the slots, and a parked job takes a slot again (before any
new job) once its provider lets it in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from worker import metrics


class Slots:
    def __init__(self, limit: int, *, max_parked: int) -> None:
        self.limit = limit
        self._max_parked = max_parked
        self._held = 0
        self._parked = 0
        self._returning = 0
        self._changed = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots a new job may take now: parked jobs coming back go first, and the parked
        ones count against the bound on jobs beyond the slots."""
        beside_parked = self.limit + self._max_parked - (self._held + self._parked)
        return max(0, min(self.limit - self._held - self._returning, beside_parked))

    @property
    def parked(self) -> int:
        return self._parked

    async def wait_free(self) -> int:
        """Wait until at least one slot is free; returns how many are."""
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free

    def take(self) -> None:
        self._held += 1

    def give_back(self) -> None:
        self._held -= 1
        self._changed.set()

    @contextlib.asynccontextmanager
    async def parked_while(self) -> AsyncIterator[None]:
        """Give the slot back for the block (waiting for a provider), take one on leaving.

        Cancelled while parked (a shutdown), the job takes its slot back at once to hand
        itself back: briefly over the limit rather than stuck behind other jobs.
        """
        self._held -= 1
        self._parked += 1
        metrics.JOBS_PARKED.set(self._parked)
        self._changed.set()
        try:
            yield
        except BaseException:
            self._parked -= 1
            self._held += 1
            metrics.JOBS_PARKED.set(self._parked)
            raise
        self._parked -= 1
        metrics.JOBS_PARKED.set(self._parked)
        self._returning += 1
        try:
            while self._held >= self.limit:
                self._changed.clear()
                await self._changed.wait()
        finally:
            self._returning -= 1
            self._held += 1
