"""The running parts every phase shares, and what the harness samples from them at a moment."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import postgres
from bench.config import Config
from bench.processes import Child, Placement
from bench.procfs import core_jiffies, cpu_seconds, tree_cpu_seconds
from worker.postgres import Database


@dataclass
class Parts:
    """The running parts every phase shares."""

    cfg: Config
    run_dir: Path
    placement: Placement
    admin: Database  # the server's admin database: counters are read from there
    db_name: str
    dsn: str
    sim: Child
    sim_url: str
    moto: Child
    sqs_url: str
    queue_url: str
    models_file: Path


@dataclass
class Sample:
    """What the harness reads from /proc and PostgreSQL at one moment."""

    at: float
    worker_cpu_s: list[float]
    sim_cpu_s: float
    moto_cpu_s: float
    cores: dict[int, tuple[int, int]]
    harness_cpu_s: float = field(default_factory=time.process_time)
    backend_cpu_s: dict[int, float] = field(default_factory=dict)
    wal_lsn: str | None = None
    wal_fpi: int = 0
    checkpoints: int = 0


async def sample(parts: Parts, workers: Sequence[Child], *, database: bool) -> Sample:
    taken = Sample(
        at=time.time(),
        worker_cpu_s=[cpu_seconds(w.pid) for w in workers],
        sim_cpu_s=tree_cpu_seconds(parts.sim.pid),
        moto_cpu_s=tree_cpu_seconds(parts.moto.pid),
        cores=core_jiffies(),
    )
    if database:  # not at the first claim: /proc alone, so the sample stays close to it
        wal = await postgres.wal_state(parts.admin)
        taken.wal_lsn = wal.lsn
        taken.wal_fpi = wal.full_page_images
        taken.checkpoints = wal.checkpoints
        for pid in await postgres.backend_pids(parts.admin, parts.db_name):
            with contextlib.suppress(OSError):
                taken.backend_cpu_s[pid] = cpu_seconds(pid)
    return taken
