"""`submit --follow`: a job's answer as it grows, read from its deltas with a cursor
(contract section 7). The answer goes to stdout alone; reasoning goes to stderr, marked."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

from worker.client import queries
from worker.jobs import Status
from worker.postgres import Database

# How often a follower polls; the worker flushes every WORKER_FLUSH_INTERVAL_S (0.4 s).
FOLLOW_INTERVAL_S = 0.2
# A job still `pending` this long usually means no worker reads the queue: say so once.
PENDING_HINT_S = 30.0
THINKING_MARK = "thinking: "
# Dim on a terminal, so that the reasoning reads as an aside next to the answer.
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


@dataclass
class Follower:
    """Prints a job's answer as it grows, and its reasoning beside it on `err`."""

    db: Database
    job_id: uuid.UUID
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    interval_s: float = FOLLOW_INTERVAL_S
    attempt: int = 0
    seq: int = 0
    shown: int = 0  # characters of the current attempt's answer printed so far
    reasoned: int = 0  # characters of the current attempt's reasoning printed so far
    thinking: bool = False  # a marked reasoning line is open on `err`

    async def run(self) -> Status | None:
        """Follow until the job ends; returns its final status (None: the row is gone)."""
        started = time.monotonic()
        hinted = False
        while True:
            # Status before deltas: a delta commits with (or before) the status it goes
            # with, so once a terminal status is seen, the read after it has every delta.
            status = await queries.job_status(self.db, self.job_id)
            if status is None:
                return None
            await self._print_new()
            if status.is_terminal:
                await self._print_row_if_deltas_expired()
                self._end_thinking()
                return status
            if status is Status.PENDING and not hinted:
                hinted = time.monotonic() - started > PENDING_HINT_S
                if hinted:
                    self._note(
                        f"still pending after {PENDING_HINT_S:.0f} s: is a worker reading"
                        " SQS_QUEUE_URL? (README, Troubleshooting)"
                    )
            await asyncio.sleep(self.interval_s)

    async def _print_new(self) -> None:
        deltas = await queries.deltas_after(
            self.db, self.job_id, attempt=self.attempt, seq=self.seq
        )
        for delta in deltas:
            if delta.attempt != self.attempt:
                self._start_over(delta.attempt)
            if delta.reasoning:
                self._think(delta.reasoning)
            if delta.content:
                self._answer(delta.content)
            self.seq = delta.seq
        self.out.flush()

    def _start_over(self, attempt: int) -> None:
        """A higher attempt started over from empty text (contract section 7)."""
        if self.shown or self.reasoned:
            self._end_thinking()
            if self.shown:
                self.out.write("\n")
                self.out.flush()
            self._note(f"the answer started over (attempt {attempt})")
        self.attempt, self.shown, self.reasoned = attempt, 0, 0

    def _think(self, text: str) -> None:
        if not self.thinking:
            if self.shown:
                # Reasoning after some answer text (a model that thinks between steps).
                self.out.flush()
            self.err.write(self._styled(THINKING_MARK, start=True))
            self.thinking = True
        self.err.write(text)
        self.err.flush()
        self.reasoned += len(text)

    def _answer(self, text: str) -> None:
        self._end_thinking()
        self.out.write(text)
        self.shown += len(text)

    def _end_thinking(self) -> None:
        if self.thinking:
            self.err.write(self._styled("\n", start=False))
            self.err.flush()
            self.thinking = False

    def _styled(self, text: str, *, start: bool) -> str:
        if not self.err.isatty():
            return text
        return _DIM + text if start else _RESET + text

    async def _print_row_if_deltas_expired(self) -> None:
        """Deltas are swept WORKER_DELTA_RETENTION_S after the end; the row still has it all."""
        if self.attempt:
            return
        view = await queries.job_view(self.db, self.job_id)
        if view is None:
            return
        if view["reasoning_content"]:
            self._think(view["reasoning_content"])
        if view["partial_content"]:
            self._answer(view["partial_content"])
            self.out.flush()

    def _note(self, text: str) -> None:
        print(f"streaming-worker: {text}", file=self.err, flush=True)
