"""The soak run's faults besides the simulator's: kill -9 of one worker and its restart,
terminated PostgreSQL backends, poison messages, cancellations by the app, and the takeover
of a killed worker's jobs, each timed by a bounded loop that ends with the run's phase."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import postgres
from bench.config import note
from bench.processes import Child, free_port, spawn
from bench.soak_plan import POISON_BODIES
from bench.workerlog import WorkerLog
from worker.client.queries import cancel_job
from worker.postgres import Database

WORKER_APPLICATION_NAME = "streaming-worker"
TRACK_S = 150.0  # a killed worker's jobs are followed this long at most
TRACK_POLL_S = 0.25
CANCEL_AFTER_DELTAS = 2
CANCEL_GIVE_UP_S = 90.0


class SoakLog(WorkerLog):
    """A worker's log as the soak reads it: also takeovers, lost leases, every ending
    (counted per job: a job ended twice is a duplicate) and poison messages."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.child_name = path.stem
        self.endings: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.taken_over: dict[str, list[str]] = {}  # job id -> timestamps of its takeovers
        self.restart_errors: dict[str, list[str]] = {}  # job id -> why its attempts restarted
        self.errors: list[dict[str, Any]] = []  # error-level events, with their exception's end

    def _event(self, record: dict[str, Any]) -> None:
        super()._event(record)
        event, job_id = str(record.get("event")), record.get("job_id")
        self.events[event] += 1
        if record.get("level") in ("error", "critical"):
            lines = str(record.get("exception", "")).strip().splitlines()
            self.errors.append(
                {"event": event, "job_id": job_id, "timestamp": record.get("timestamp"),
                 "exception": lines[-1] if lines else None}
            )  # fmt: skip
        if not job_id:
            return
        if event in ("job_taken_over", "attempt_restarted"):
            self.claimed.add(job_id)
        if event == "job_taken_over":
            self.taken_over.setdefault(job_id, []).append(str(record.get("timestamp")))
        elif event == "attempt_restarted":
            self.restart_errors.setdefault(job_id, []).append(str(record.get("error")))
        elif event == "lease_lost":
            self.ended[job_id] = event
        if event in ("job_completed", "job_failed", "job_cancelled"):
            self.endings[job_id] += 1

    def in_flight(self) -> set[str]:
        self.poll()
        return self.claimed - set(self.ended)


@dataclass
class Slot:
    """One of the two worker places: its current process and every process it had."""

    index: int
    env: dict[str, str]
    run_dir: Path
    child: Child | None = None
    log: SoakLog | None = None
    generation: int = 0
    killing: bool = False
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    logs: list[SoakLog] = field(default_factory=list)

    def start(self) -> None:
        name = f"worker-{self.index}-{self.generation}"
        self.generation += 1
        env = {**self.env, "WORKER_METRICS_PORT": str(free_port())}
        self.child = spawn(
            name, [sys.executable, "-m", "worker", "run"], logs_dir=self.run_dir, env=env,
            cpus=None,
        )  # fmt: skip
        self.log = SoakLog(self.child.log_path)
        self.logs.append(self.log)

    def started(self) -> bool:
        if self.log is None:
            return False
        self.log.poll()
        return self.log.started_at is not None

    def record_exit(self, code: int, *, how: str) -> None:
        assert self.child is not None
        self.history.append({"name": self.child.name, "exit_code": code, "how": how})


@dataclass
class KillRecord:
    at: float
    worker: str
    exit_code: int
    victims: set[str] = field(default_factory=set)
    restarted_after_s: dict[str, float] = field(default_factory=dict)
    ended_unrestarted: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)


@dataclass
class Faults:
    """What the loops did, for the report."""

    kills: list[KillRecord] = field(default_factory=list)
    terminations: list[int] = field(default_factory=list)
    poison_sent: Counter[str] = field(default_factory=Counter)
    cancels: dict[str, dict[str, Any]] = field(default_factory=dict)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def every(
    stop: asyncio.Event, rng: random.Random, mean_s: float, action: Callable[[], Awaitable[None]]
) -> None:
    """Run `action` every `mean_s` (±20%) until `stop` is set."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.8, 1.2) * mean_s)
        if stop.is_set():
            return
        await action()


async def kill_one(
    slots: list[Slot], faults: Faults, dsn: str, number: int, *, lease_s: float
) -> asyncio.Task[None]:
    """kill -9 one worker (alternating), restart it at once, follow its jobs' takeover."""
    victim, other = slots[number % 2], slots[(number + 1) % 2]
    for _ in range(300):  # one worker stays up: the other one has started (bounded, 60 s)
        if other.started():
            break
        await asyncio.sleep(0.2)
    assert victim.child is not None
    assert victim.log is not None
    in_flight = victim.log.in_flight()
    victim.killing = True
    victim.child.popen.send_signal(signal.SIGKILL)
    killed_at = time.time()
    code = await asyncio.to_thread(victim.child.popen.wait)
    victim.record_exit(code, how="kill -9")
    name = victim.child.name
    async with await postgres.connect(dsn) as db:
        running = await db.fetch(
            "SELECT id::text, attempts FROM ai_streaming_jobs"
            " WHERE status IN ('processing', 'streaming')"
            # An earlier kill's jobs still waiting for their restart are that kill's.
            " AND lease_expires_at >= now()"
        )
    victim.start()
    victim.killing = False
    record = KillRecord(at=killed_at, worker=name, exit_code=code)
    faults.kills.append(record)
    snapshot = {row["id"]: row["attempts"] for row in running}
    record.victims = in_flight & set(snapshot)
    note(f"killed {name} (exit {code}) with {len(record.victims)} jobs in flight; restarted")
    return asyncio.create_task(_follow(record, snapshot, dsn, lease_s=lease_s))


async def _follow(
    record: KillRecord, snapshot: dict[str, int], dsn: str, *, lease_s: float
) -> None:
    """When each of the dead worker's jobs starts its next attempt. A job in flight at the
    kill whose lease is seen expired is the dead worker's too, whatever its log said."""
    async with await postgres.connect(dsn) as db:
        await _follow_on(db, record, snapshot, lease_s=lease_s)


async def _follow_on(
    db: Database, record: KillRecord, snapshot: dict[str, int], *, lease_s: float
) -> None:
    ids = list(snapshot)
    while time.time() - record.at < TRACK_S:
        rows = await db.fetch(
            "SELECT id::text, status, attempts, lease_expires_at < now() AS expired"
            " FROM ai_streaming_jobs WHERE id = ANY($1::uuid[])",
            ids,
        )
        now = time.time()
        for row in rows:
            job_id = row["id"]
            if row["expired"] and row["status"] in ("processing", "streaming"):
                record.victims.add(job_id)
            if job_id in record.restarted_after_s or job_id in record.ended_unrestarted:
                continue
            if row["attempts"] > snapshot[job_id]:
                record.restarted_after_s[job_id] = round(now - record.at, 2)
            elif row["status"] in ("completed", "failed", "cancelled"):
                record.ended_unrestarted.add(job_id)
        resolved = set(record.restarted_after_s) | record.ended_unrestarted
        if now - record.at > lease_s + 3 and record.victims <= resolved:
            break
        await asyncio.sleep(TRACK_POLL_S)
    # Only the dead worker's jobs: the live one's own restarts (a dropped stream) are not.
    record.restarted_after_s = {
        j: s for j, s in record.restarted_after_s.items() if j in record.victims
    }
    record.ended_unrestarted &= record.victims
    record.unresolved = record.victims - set(record.restarted_after_s) - record.ended_unrestarted


async def terminate_backends(admin: Database, db_name: str, faults: Faults) -> None:
    terminated: int = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = $2",
        WORKER_APPLICATION_NAME,
        db_name,
    )
    faults.terminations.append(terminated)


def send_poison(sqs: Any, queue_url: str, faults: Faults, number: int) -> None:
    """One body that can never name a job (boto3, called in a thread)."""
    body = POISON_BODIES[number % len(POISON_BODIES)]
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    faults.poison_sent[body] += 1


async def cancel_when_streaming(
    dsn: str, stop: asyncio.Event, wanted: dict[str, float], faults: Faults
) -> None:
    """Cancel, as the app does, each job in `wanted` (id -> when sent) once it has streamed a
    few deltas; give up on one after CANCEL_GIVE_UP_S. Ends when `stop` is set and none wait."""
    async with await postgres.connect(dsn) as db:
        await _cancel_on(db, stop, wanted, faults)


async def _cancel_on(
    db: Database, stop: asyncio.Event, wanted: dict[str, float], faults: Faults
) -> None:
    while not (stop.is_set() and not wanted):
        if wanted:
            rows = await db.fetch(
                "SELECT j.id::text, j.status, (SELECT count(*) FROM ai_streaming_job_deltas d"
                " WHERE d.job_id = j.id AND d.attempt = j.attempts) AS deltas"
                " FROM ai_streaming_jobs j WHERE j.id = ANY($1::uuid[])",
                list(wanted),
            )
            for row in rows:
                job_id = row["id"]
                if row["status"] in ("completed", "failed", "cancelled"):
                    faults.cancels[job_id] = {"cancelled": False, "status": row["status"]}
                elif row["status"] == "streaming" and row["deltas"] >= CANCEL_AFTER_DELTAS:
                    changed, status = await cancel_job(db, uuid.UUID(job_id))
                    faults.cancels[job_id] = {
                        "cancelled": changed,
                        "at": time.time(),
                        "status": None if status is None else status.value,
                    }
                elif time.time() - wanted[job_id] > CANCEL_GIVE_UP_S:
                    faults.cancels[job_id] = {"cancelled": False, "status": row["status"]}
                else:
                    continue
                del wanted[job_id]
        await asyncio.sleep(0.3)
