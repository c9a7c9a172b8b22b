"""`python -m worker.bench`: the real pipeline end to end on this machine, and two baselines.

Starts a throwaway PostgreSQL database, moto's SQS server, the LLM simulator and the worker,
each in its own process pinned to a core, sends jobs as the app does, and measures CPU per
chunk, memory, pickup and visibility latency, statements and WAL. Then it runs LiteLLM alone
and a bare aiohttp client on the same streams. Prints one JSON document and writes it to
`bench-results/<timestamp>-<label>.json`; process logs stay in `bench-results/tmp/`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

if TYPE_CHECKING:
    from worker.queue import JobQueue

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path("bench-results")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"
REGION = "us-east-1"
MODEL = "sim-model"
API_KEY = "sk-bench-not-a-secret"  # the simulator takes any key
AWS_ENV = {
    # Only ever sent to the local moto server started here.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_S = 0.1
STATUS_EVERY_S = 5.0
SEND_PARALLEL = 10
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
SIM_CPU_WARN = 0.8
FOREIGN_LOAD_WARN = 0.15
SATURATED = 0.9
STRETCHED = 1.15  # job duration over the simulator's pace
OTHER_DB_WARN = 100
# Idle pickup: one-token jobs sent one at a time, each after the last has ended.
PICKUP_PROBES = 40
PICKUP_SPACING_S = 0.2
PICKUP_USER = "bench-pickup"
PICKUP_TIMEOUT_S = 30
TERMINAL_EVENTS = frozenset({"job_completed", "job_failed", "job_cancelled", "job_already_ended"})
_TAG = re.compile(r"^bench (\S+) (\d+):")
_LISTENING = re.compile(rb"simulator listening on (http://\S+)")


@dataclass(frozen=True)
class Config:
    """One benchmark run's parameters (a preset, then the command line's overrides)."""

    jobs: int = 400
    concurrency: int = 200
    tokens: int = 200
    tps: float = 20.0
    ttft_s: float = 0.2
    flush_interval_s: float = 0.4
    content_refresh_s: float = 1.0
    workers: int = 1
    label: str = "standard"
    skip_baselines: bool = False
    database_url: str = DEFAULT_DATABASE_URL
    sim_processes: int = 1
    max_waiting: int | None = None
    timeout_s: float | None = None
    # Caps each worker at this share of a core (cgroup v1 CPU quota): two capped workers fit
    # beside the simulator, moto and PostgreSQL on a 2-core machine, for the scaling figure.
    worker_cpu_quota: float | None = None

    @property
    def capacity(self) -> int:
        return self.concurrency * self.workers

    @property
    def stream_s(self) -> float:
        """How long one answer takes at the simulator's pace."""
        return self.ttft_s + self.tokens / self.tps

    @property
    def waiting_limit(self) -> int:
        # moto scans the whole queue, running jobs' messages included, on every call: keep
        # it shallow. A worker with full slots only needs a few messages ready to refill them.
        return self.max_waiting or max(10, min(self.capacity, 100))

    @property
    def deadline_s(self) -> float:
        waves = math.ceil(self.jobs / self.capacity)
        return self.timeout_s or 3 * waves * self.stream_s + 120


PRESETS: dict[str, Config] = {
    # A few minutes on a 2-core machine: two waves of 200 streams of 200 chunks at 20/s.
    "standard": Config(),
    # The targets: 1,000 concurrent streams at 20 chunks/s, of 2,000 chunks each.
    "big": Config(jobs=1000, concurrency=1000, tokens=2000, tps=20.0, label="big"),
}


# --- /proc: CPU, memory, placement --------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all its threads, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    # Split after the command name, which may contain spaces: fields 14 and 15 are then 11, 12.
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the simulator's children, for instance)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def status_kib(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` memory line (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def core_jiffies() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    cores: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]  # idle + iowait
            cores[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return cores


def core_busy_share(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[str, float]:
    shares = {}
    for core, (busy, total) in after.items():
        busy0, total0 = before.get(core, (0, 0))
        shares[f"cpu{core}"] = round((busy - busy0) / max(total - total0, 1), 3)
    return shares


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block on `cpus`: a process spawned inside starts pinned, with no race."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- child processes ------------------------------------------------------------------------


@dataclass
class Child:
    """A process this benchmark started; output goes to a log file that stays for inspection."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    spawned_at: float
    cpus: set[int] | None
    signalled: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def signal_stop(self) -> None:
        """SIGTERM, once: a second one could land after the worker removed its handlers."""
        if self.alive() and not self.signalled:
            self.signalled = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        self.signal_stop()
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def spawn(
    name: str,
    argv: list[str],
    *,
    logs_dir: Path,
    env: dict[str, str],
    cpus: set[int] | None,
) -> Child:
    log_path = logs_dir / f"{name}.log"
    with log_path.open("wb") as log, affinity(cpus):
        spawned_at = time.time()
        popen = subprocess.Popen(  # noqa: S603 (our own interpreter and moto's script, no shell)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=logs_dir,  # away from a developer's .env in the checkout
        )
    return Child(name, popen, log_path, spawned_at, cpus)


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 100_000


@contextlib.contextmanager
def cpu_quota(pid: int, share: float, *, name: str) -> Iterator[None]:
    """Hold process `pid` to `share` of one core with a cgroup v1 CPU quota."""
    group = CGROUP_CPU / f"sw-bench-{os.getpid()}-{name}"
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(share * CFS_PERIOD_US)))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as error:
        raise BenchError(
            f"--worker-cpu-quota needs root and cgroup v1 at {CGROUP_CPU}: {error}"
        ) from None
    try:
        yield
    finally:
        # A group must be empty to go: move the process (if still there) back first.
        with contextlib.suppress(OSError):
            (CGROUP_CPU / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def wait_for(
    probe: Callable[[], Awaitable[bool]], *, what: str, child: Child, timeout_s: float
) -> None:
    """Poll `probe` until it is true; fail if the child died or the deadline passed."""
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if not child.alive():
            raise BenchError(f"{what}: {child.name} exited\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout_s:g} s\n{child.log_tail()}")
        await asyncio.sleep(POLL_S)


async def http_ok(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as resp,
        ):
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False


class BenchError(Exception):
    """The benchmark cannot go on; the message says which part failed."""


# --- the worker's log -----------------------------------------------------------------------


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


# --- statistics -----------------------------------------------------------------------------


def distribution(values: Sequence[float], *, digits: int = 4) -> dict[str, float | int | None]:
    """n, p50, p99, max and mean (nearest-rank percentiles)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], digits)

    return {
        "n": len(ordered),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "max": round(ordered[-1], digits),
        "mean": round(sum(ordered) / len(ordered), digits),
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


@dataclass(frozen=True)
class JobRow:
    index: int
    job_id: str
    status: str
    attempts: int
    started_at: float | None
    completed_at: float | None
    text_bytes: int
    text_sha256: str


def pickup_latencies(
    rows: Sequence[JobRow], sent: dict[str, float], capacity: int
) -> tuple[list[float], list[float]]:
    """(every job, jobs that had a free slot waiting when sent): row claimed - message sent.

    A job had a free slot when the jobs sent up to it and not yet ended, itself included,
    fit in the workers' capacity: then its wait is the receive path, not other jobs.
    """
    sends = sorted(sent.values())
    ends = sorted(r.completed_at for r in rows if r.completed_at is not None)
    every, free = [], []
    for row in rows:
        at = sent.get(row.job_id)
        if at is None or row.started_at is None:
            continue
        wait = row.started_at - at
        every.append(wait)
        outstanding = bisect.bisect_right(sends, at) - bisect.bisect_right(ends, at)
        if outstanding <= capacity:
            free.append(wait)
    return every, free


def max_in_flight(rows: Sequence[JobRow]) -> int:
    """The most jobs claimed and not yet ended at any one time, from the rows' timestamps."""
    events = sorted(
        [(r.started_at, 1) for r in rows if r.started_at is not None]
        + [(r.completed_at, -1) for r in rows if r.completed_at is not None]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def chunk_lags(
    tokens: Sequence[str],
    deltas: Sequence[tuple[int, float]],
    *,
    started_at: float,
    ttft_s: float,
    tps: float,
) -> tuple[list[float], int]:
    """Per chunk: delta row's created_at - when the simulator sent the chunk; and misfits.

    The simulator is deterministic: content chunk k (from 0) leaves at
    started_at + ttft + k / tps. A delta's cumulative length tells how many chunks it covers.
    """
    cumulative = list(itertools.accumulate((len(t) for t in tokens), initial=0))
    lags: list[float] = []
    chars = covered = misfits = 0
    for length, created_at in deltas:
        chars += length
        count = bisect.bisect_left(cumulative, chars)
        if count >= len(cumulative) or cumulative[count] != chars:
            misfits += 1  # not on a chunk boundary: the next delta that is accounts for it
            continue
        lags += [created_at - (started_at + ttft_s + k / tps) for k in range(covered, count)]
        covered = count
    return lags, misfits


# --- the jobs -------------------------------------------------------------------------------


def messages_for(phase: str, index: int, cfg: Config) -> list[dict[str, str]]:
    """A unique prompt (its own deterministic answer) carrying the simulator's pacing."""
    directive = f"[[sim tokens={cfg.tokens} tps={cfg.tps:g} ttft={cfg.ttft_s:g}]]"
    return [{"role": "user", "content": f"bench {phase} {index}: tell me more {directive}"}]


def models_document(sim_url: str) -> dict[str, Any]:
    # As config/models.compose.yaml has it: a price, so cost accounting runs as in production.
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{sim_url}/v1",
                    "api_key": API_KEY,
                },
                "model_info": {
                    "input_cost_per_token": 0.00000015,
                    "output_cost_per_token": 0.0000006,
                },
            }
        ],
        "router_settings": {"num_retries": 0},
    }


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        **AWS_ENV,
        "PYTHONPATH": path,  # this checkout's code, whatever is installed
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        **(extra or {}),
    }


def database_in(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class Placement:
    """Which cores each part runs on; `None` means unpinned."""

    workers: list[set[int] | None]
    others: set[int] | None
    note: str

    @classmethod
    def for_run(cls, workers: int, *, shared: bool = False) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls([None] * workers, None, "one core only: nothing pinned")
        if workers == 1 and not shared:
            return cls(
                [{cpus[0]}],
                {cpus[1]},
                f"worker on cpu{cpus[0]}; simulator, moto and this harness on cpu{cpus[1]}; "
                "PostgreSQL unpinned (a system service)",
            )
        return cls(
            [{cpus[i % len(cpus)]} for i in range(workers)],
            None,
            "one worker per core; the simulator, moto, this harness and PostgreSQL are "
            "unpinned and share the cores with the workers",
        )

    def as_json(self) -> dict[str, Any]:
        def show(cpus: set[int] | None) -> list[int] | str:
            return sorted(cpus) if cpus is not None else "any"

        return {
            "workers": [show(c) for c in self.workers],
            "simulator_moto_harness": show(self.others),
            "baselines": show(self.workers[0]),
            "note": self.note,
        }


# --- the run --------------------------------------------------------------------------------


@dataclass
class Parts:
    """The running parts every phase shares."""

    cfg: Config
    run_dir: Path
    placement: Placement
    admin: Any  # asyncpg.Connection to the server's admin database
    db_name: str
    dsn: str
    sim: Child
    sim_url: str
    moto: Child
    sqs_url: str
    queue_url: str
    models_file: Path


async def run_benchmark(cfg: Config) -> dict[str, Any]:
    """Set everything up, run the worker phase and the baselines, tear everything down."""
    import asyncpg  # noqa: PLC0415, TID251 (the harness watches the database from outside)

    # SIGTERM cleans up as Ctrl-C does (asyncio.Runner turns SIGINT into this cancellation).
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    os.environ.update(AWS_ENV)
    placement = Placement.for_run(cfg.workers, shared=cfg.worker_cpu_quota is not None)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (RESULTS_DIR / "tmp" / f"{stamp}-{cfg.label}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]  # others' work skews CPU figures
    # The harness itself runs beside the simulator, never on a worker's core.
    os.sched_setaffinity(0, placement.others or os.sched_getaffinity(0))
    async with contextlib.AsyncExitStack() as stack:
        admin = await asyncpg.connect(cfg.database_url)
        stack.push_async_callback(admin.close)
        db_name = f"sw_bench_{secrets.token_hex(6)}"
        await admin.execute(f'CREATE DATABASE "{db_name}"')
        stack.push_async_callback(
            admin.execute, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'
        )
        dsn = database_in(cfg.database_url, db_name)
        _note(f"database {db_name}; logs in {run_dir}")
        await _migrate(dsn, run_dir)

        moto_port = free_port()
        moto_server = Path(sys.executable).with_name("moto_server")
        moto = spawn(
            "moto",
            [str(moto_server), "-H", HOST, "-p", str(moto_port)],
            logs_dir=run_dir,
            env=child_env(),
            cpus=placement.others,
        )
        stack.callback(moto.stop)
        sim = spawn(
            "simulator",
            [
                *(sys.executable, "-m", "simulator", "--host", HOST, "--port", "0"),
                *("--processes", str(cfg.sim_processes)),
            ],
            logs_dir=run_dir,
            env=child_env(),
            cpus=placement.others,
        )
        stack.callback(sim.stop)
        sqs_url = f"http://{HOST}:{moto_port}"
        await wait_for(
            lambda: http_ok(f"{sqs_url}/moto-api/"), what="moto", child=moto, timeout_s=30
        )
        sim_url = await _simulator_url(sim)

        from worker.queue import JobQueue  # noqa: PLC0415 (keeps `--baseline` processes lean)

        queue_url = await JobQueue.create(
            f"bench-{secrets.token_hex(4)}", region=REGION, endpoint_url=sqs_url
        )
        import yaml  # noqa: PLC0415 (keeps `--baseline` processes lean)

        models_file = run_dir / "models.yaml"
        models_file.write_text(yaml.safe_dump(models_document(sim_url)), encoding="utf-8")
        parts = Parts(
            cfg, run_dir, placement, admin, db_name, dsn, sim, sim_url, moto, sqs_url,
            queue_url, models_file,
        )  # fmt: skip
        worker = await _worker_phase(parts)
        import_litellm_s = await _import_litellm_s(parts)
        baselines: dict[str, Any] = {}
        if not cfg.skip_baselines:
            for kind in ("litellm", "floor"):
                baselines[kind] = await _baseline_phase(parts, kind)
        server_version = await admin.fetchval("SHOW server_version")
    return _report(
        cfg,
        placement=placement,
        worker=worker,
        baselines=baselines,
        import_litellm_s=import_litellm_s,
        server_version=server_version,
        duration_s=time.monotonic() - began,
        load_before=load_before,
    )


async def _migrate(dsn: str, run_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "migrate",
        env=child_env({"DATABASE_URL": dsn}), cwd=run_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError("streaming-worker migrate did not finish within 120 s") from None
    if process.returncode != 0:
        raise BenchError(f"streaming-worker migrate failed:\n{output.decode(errors='replace')}")


async def _simulator_url(sim: Child) -> str:
    found: list[str] = []

    async def listening() -> bool:
        match = _LISTENING.search(sim.log_path.read_bytes())
        if match:
            found.append(match.group(1).decode())
        return bool(match)

    await wait_for(listening, what="simulator", child=sim, timeout_s=30)
    return found[0]


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


async def _sample(parts: Parts, workers: Sequence[Child], *, database: bool) -> Sample:
    sample = Sample(
        at=time.time(),
        worker_cpu_s=[cpu_seconds(w.pid) for w in workers],
        sim_cpu_s=tree_cpu_seconds(parts.sim.pid),
        moto_cpu_s=tree_cpu_seconds(parts.moto.pid),
        cores=core_jiffies(),
    )
    if database:
        # From the admin database: these queries are not counted against the bench database.
        sample.wal_lsn = await parts.admin.fetchval("SELECT pg_current_wal_lsn()::text")
        # Full-page images follow every checkpoint: they explain most run-to-run WAL variance.
        sample.wal_fpi = await parts.admin.fetchval("SELECT wal_fpi FROM pg_stat_wal")
        sample.checkpoints = await parts.admin.fetchval(
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        )
        pids = await parts.admin.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = $1 AND backend_type = 'client backend'",
            parts.db_name,
        )
        for row in pids:
            with contextlib.suppress(OSError):
                sample.backend_cpu_s[row["pid"]] = cpu_seconds(row["pid"])
    return sample


async def _transactions(parts: Parts) -> tuple[int, int]:
    """Transactions so far: (the bench database, other databases but the admin one)."""
    row = await parts.admin.fetchrow(
        "SELECT coalesce(sum(xact_commit + xact_rollback) FILTER (WHERE datname = $1), 0),"
        " coalesce(sum(xact_commit + xact_rollback)"
        "          FILTER (WHERE datname <> $1 AND datname <> current_database()), 0)"
        " FROM pg_stat_database",
        parts.db_name,
    )
    return int(row[0]), int(row[1])


async def _insert_jobs(parts: Parts) -> list[str]:
    """The run's job rows, written as the app does; their ids in job order."""
    import asyncpg  # noqa: PLC0415, TID251 (the harness writes rows as the app does)

    cfg = parts.cfg
    conn = await asyncpg.connect(parts.dsn)
    try:
        inserted = await conn.fetch(
            "INSERT INTO ai_streaming_jobs (user_id, request_data)"
            " SELECT u, r::jsonb FROM unnest($1::text[], $2::text[]) AS t(u, r)"
            " RETURNING id::text, user_id",
            [str(i) for i in range(cfg.jobs)],
            [
                json.dumps({"model": MODEL, "messages": messages_for("job", i, cfg)})
                for i in range(cfg.jobs)
            ],
        )
    finally:
        await conn.close()
    return [row["id"] for row in sorted(inserted, key=lambda r: int(r["user_id"]))]


async def _worker_phase(parts: Parts) -> dict[str, Any]:
    """Run the worker(s) on every job, as the app submits them; return the figures."""
    from worker.queue import JobQueue  # noqa: PLC0415 (keeps `--baseline` processes lean)

    cfg = parts.cfg
    job_ids = await _insert_jobs(parts)
    env = child_env(
        {
            "DATABASE_URL": parts.dsn,
            "SQS_QUEUE_URL": parts.queue_url,
            "AWS_ENDPOINT_URL_SQS": parts.sqs_url,
            "WORKER_MODELS_FILE": str(parts.models_file),
            "WORKER_CONCURRENCY": str(cfg.concurrency),
            "WORKER_FLUSH_INTERVAL_S": f"{cfg.flush_interval_s:g}",
            "WORKER_CONTENT_REFRESH_S": f"{cfg.content_refresh_s:g}",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_LOG_LEVEL": "info",
            # Every job has ended when the harness stops the workers: no grace is needed.
            "WORKER_SHUTDOWN_GRACE_S": "5",
        }
    )
    workers: list[Child] = []
    logs: list[WorkerLog] = []
    quotas = contextlib.ExitStack()
    metrics_ports: list[int] = []
    try:
        for index, cpus in enumerate(parts.placement.workers):
            metrics_ports.append(free_port())
            worker = spawn(
                f"worker-{index}",
                [sys.executable, "-m", "worker", "run"],
                logs_dir=parts.run_dir,
                env={**env, "WORKER_METRICS_PORT": str(metrics_ports[-1])},
                cpus=cpus,
            )
            workers.append(worker)
            logs.append(WorkerLog(worker.log_path))
        for worker, log in zip(workers, logs, strict=True):
            await wait_for(
                _started(log), what="worker start", child=worker, timeout_s=READY_TIMEOUT_S
            )
            if cfg.worker_cpu_quota is not None:  # once started: the import is not measured
                quotas.enter_context(cpu_quota(worker.pid, cfg.worker_cpu_quota, name=worker.name))
        sent: dict[str, float] = {}
        async with JobQueue.open(parts.queue_url, region=REGION, endpoint_url=parts.sqs_url) as q:
            _note(f"{len(workers)} worker(s) ready; {PICKUP_PROBES} pickup probes, one at a time")
            idle_pickups = await _idle_pickups(parts, q, logs)
            _note(f"sending {cfg.jobs} jobs")
            rss_before = [status_kib(w.pid, "VmRSS") for w in workers]
            transactions_before = await _transactions(parts)
            ready = await _sample(parts, workers, database=True)
            run = await _feed_and_watch(
                parts, workers=workers, logs=logs, queue=q, job_ids=job_ids, sent=sent
            )
        peak = [status_kib(w.pid, "VmHWM") for w in workers]
        histograms = await _worker_histograms(metrics_ports)
        _note(
            "every job has ended; stopping the worker(s)"
            if run.finished
            else f"deadline of {cfg.deadline_s:g} s reached; stopping the worker(s)"
        )
        stop_began = time.monotonic()
        for worker in workers:
            worker.signal_stop()
        exit_codes = [await asyncio.to_thread(w.stop) for w in workers]
        stop_s = time.monotonic() - stop_began
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        quotas.close()
        for log in logs:
            log.close()
    # Exited backends have flushed their statistics; a moment for the last ones to land.
    await asyncio.sleep(0.5)
    transactions, others = (
        after - before
        for after, before in zip(await _transactions(parts), transactions_before, strict=True)
    )
    wal_bytes = await parts.admin.fetchval(
        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
        run.done.wal_lsn,
        ready.wal_lsn,
    )
    wal_profile = await _wal_profile(parts, ready.wal_lsn, run.done.wal_lsn)
    rows, deltas = await _results(parts.dsn)
    records = await _simulator_records(parts.sim_url, cfg, phase="job")
    return _worker_figures(
        parts,
        job_ids=job_ids,
        run=run,
        ready=ready,
        logs=logs,
        workers=workers,
        rss_before=rss_before,
        peak=peak,
        sent=sent,
        transactions=transactions,
        other_transactions=others,
        wal_bytes=wal_bytes,
        wal_profile=wal_profile,
        idle_pickups=idle_pickups,
        histograms=histograms,
        rows=rows,
        deltas=deltas,
        records=records,
        exit_codes=exit_codes,
        stop_s=stop_s,
    )


_WALDUMP_LINE = re.compile(
    r"rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*?desc: (\S+)(?:.*?rel \d+/\d+/(\d+))?"
)


async def _wal_profile(parts: Parts, start: str | None, end: str | None) -> dict[str, Any]:
    """WAL of the run by record type and relation, read back with pg_waldump: the profile
    that says where the bytes go (needs a superuser and the server's files on this host)."""
    waldump = _find_waldump()
    if waldump is None or start is None or end is None:
        return {"unavailable": "pg_waldump not found"}
    try:
        data_dir = await parts.admin.fetchval("SHOW data_directory")
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
    names = await _relation_names(parts.dsn, {int(rel) for _, _, rel in totals if rel})
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


async def _relation_names(dsn: str, relfilenodes: set[int]) -> dict[str, str]:
    import asyncpg  # noqa: PLC0415, TID251 (the harness reads the database from outside)

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT relfilenode, relname FROM pg_class WHERE relfilenode = ANY($1::oid[])",
            sorted(relfilenodes),
        )
    finally:
        await conn.close()
    return {str(row["relfilenode"]): row["relname"] for row in rows}


def _per_job(profile: dict[str, Any], jobs: int, *, top: int = 10) -> Any:
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


def _started(log: WorkerLog) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        log.poll()
        return log.started_at is not None

    return probe


@dataclass
class Run:
    """How the worker phase went, as the harness saw it."""

    finished: bool
    first_send_at: float | None
    first_claim: Sample | None
    done: Sample


async def _feed_and_watch(
    parts: Parts,
    *,
    workers: list[Child],
    logs: list[WorkerLog],
    queue: JobQueue,
    job_ids: list[str],
    sent: dict[str, float],
) -> Run:
    """Send messages as slots free up; sample /proc at the first claim and when all ended."""
    cfg = parts.cfg

    def claimed() -> int:
        return sum(len(log.claimed) for log in logs)

    def ended() -> int:
        return sum(len(log.ended) for log in logs)

    async def feed() -> None:
        pending = list(job_ids)
        while pending:
            room = cfg.waiting_limit - (len(sent) - claimed())
            batch, pending = pending[: max(room, 0)], pending[max(room, 0) :]
            for start in range(0, len(batch), SEND_PARALLEL):
                await asyncio.gather(
                    *(_send(queue, job_id, sent) for job_id in batch[start : start + SEND_PARALLEL])
                )
            await asyncio.sleep(POLL_S / 2)

    first_claim: Sample | None = None
    began = time.monotonic()
    last_status = began
    feeder = asyncio.create_task(feed())
    try:
        while time.monotonic() - began < cfg.deadline_s:
            for log in logs:
                log.poll()
            if first_claim is None and claimed():
                first_claim = await _sample(parts, workers, database=False)
            if ended() >= cfg.jobs:
                break
            if feeder.done() and feeder.exception() is not None:
                raise BenchError(f"sending messages failed: {feeder.exception()!r}")
            dead = [w for w in workers if not w.alive()]
            if dead:
                raise BenchError(f"{dead[0].name} exited early\n{dead[0].log_tail()}")
            if time.monotonic() - last_status >= STATUS_EVERY_S:
                last_status = time.monotonic()
                _note(
                    f"{last_status - began:5.0f} s: sent {len(sent)}, claimed {claimed()},"
                    f" ended {ended()}/{cfg.jobs}"
                )
            await asyncio.sleep(POLL_S)
        done = await _sample(parts, workers, database=True)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    return Run(
        finished=ended() >= cfg.jobs,
        first_send_at=min(sent.values(), default=None),
        first_claim=first_claim,
        done=done,
    )


_HISTOGRAMS = {
    "flush_s": "streaming_worker_db_flush_duration_seconds",
    "flush_jobs": "streaming_worker_db_flush_rows",
    "visibility_lag_s": "streaming_worker_visibility_lag_seconds",
}


async def _worker_histograms(ports: Sequence[int]) -> dict[str, Any]:
    """p50/p99 (bucket upper bounds) and mean of the workers' flush and lag histograms."""
    from prometheus_client.parser import (  # noqa: PLC0415, TID251 (reads the workers' page)
        text_string_to_metric_families,
    )

    text = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for port in ports:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"http://{HOST}:{port}/metrics") as resp:
                    text += await resp.text()
    # Summed over the workers: cumulative bucket counts by upper bound, and sum and count.
    sums: dict[tuple[str, float | None], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            le = sample.labels.get("le")
            key = (sample.name, None if le is None else float(le))
            sums[key] = sums.get(key, 0.0) + sample.value
    figures: dict[str, Any] = {}
    for label, name in _HISTOGRAMS.items():
        count = sums.get((f"{name}_count", None), 0.0)
        if not count:
            continue
        buckets = sorted(
            (le, n)
            for (metric, le), n in sums.items()
            if metric == f"{name}_bucket" and le is not None
        )
        figures[label] = {
            "n": int(count),
            "mean": round(sums[(f"{name}_sum", None)] / count, 4),
            **{f"p{q}": next(le for le, n in buckets if n >= count * q / 100) for q in (50, 99)},
        }
    return figures


async def _idle_pickups(parts: Parts, queue: JobQueue, logs: Sequence[WorkerLog]) -> list[float]:
    """Messages sent one at a time to idle workers, each a one-token job: the receive path's
    own latency (message sent -> row claimed), with no backlog in front of it."""
    import asyncpg  # noqa: PLC0415, TID251 (the harness writes and reads rows as the app does)

    directive = "[[sim tokens=1 tps=100 ttft=0]]"
    conn = await asyncpg.connect(parts.dsn)
    try:
        rows = await conn.fetch(
            "INSERT INTO ai_streaming_jobs (user_id, request_data)"
            " SELECT $1, r::jsonb FROM unnest($2::text[]) AS t(r) RETURNING id::text",
            PICKUP_USER,
            [
                json.dumps(
                    {"model": MODEL, "messages": [{"role": "user", "content": f"p{i} {directive}"}]}
                )
                for i in range(PICKUP_PROBES)
            ],
        )
        sent: dict[str, float] = {}
        for row in rows:
            job_id = row["id"]
            await asyncio.sleep(PICKUP_SPACING_S)  # the workers are back in their long polls
            await _send(queue, job_id, sent)
            deadline = time.monotonic() + PICKUP_TIMEOUT_S
            while not any(job_id in log.ended for log in logs):
                if time.monotonic() > deadline:
                    raise BenchError(f"pickup probe {job_id} did not end in {PICKUP_TIMEOUT_S} s")
                await asyncio.sleep(0.01)
                for log in logs:
                    log.poll()
        started = await conn.fetch(
            "SELECT id::text, extract(epoch FROM started_at)::float8 AS started_at"
            " FROM ai_streaming_jobs WHERE user_id = $1",
            PICKUP_USER,
        )
    finally:
        await conn.close()
    for log in logs:
        log.forget_jobs()
    return [row["started_at"] - sent[row["id"]] for row in started]


async def _send(queue: JobQueue, job_id: str, sent: dict[str, float]) -> None:
    await queue.send(uuid.UUID(job_id))
    sent[job_id] = time.time()  # when SQS has it: the app's "sent"


async def _results(dsn: str) -> tuple[list[JobRow], dict[str, list[tuple[int, float]]]]:
    """Every job row, and each job's deltas of its last attempt (length, created_at)."""
    import asyncpg  # noqa: PLC0415, TID251 (the harness reads rows as the app does)

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT user_id, id::text, status, attempts,"
            " extract(epoch FROM started_at)::float8 AS started_at,"
            " extract(epoch FROM completed_at)::float8 AS completed_at,"
            " octet_length(partial_content) AS text_bytes,"
            " encode(sha256(convert_to(partial_content, 'UTF8')), 'hex') AS text_sha256"
            " FROM ai_streaming_jobs WHERE user_id <> $1",
            PICKUP_USER,
        )
        delta_rows = await conn.fetch(
            "SELECT d.job_id::text, char_length(d.content) AS chars,"
            " extract(epoch FROM d.created_at)::float8 AS created_at"
            " FROM ai_streaming_job_deltas d"
            " JOIN ai_streaming_jobs j ON j.id = d.job_id AND d.attempt = j.attempts"
            " WHERE j.user_id <> $1 ORDER BY d.job_id, d.seq",
            PICKUP_USER,
        )
    finally:
        await conn.close()
    jobs = [
        JobRow(
            index=int(r["user_id"]),
            job_id=r["id"],
            status=r["status"],
            attempts=r["attempts"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            text_bytes=r["text_bytes"],
            text_sha256=r["text_sha256"],
        )
        for r in rows
    ]
    deltas: dict[str, list[tuple[int, float]]] = {}
    for r in delta_rows:
        deltas.setdefault(r["job_id"], []).append((r["chars"], r["created_at"]))
    return jobs, deltas


async def _simulator_records(sim_url: str, cfg: Config, *, phase: str) -> list[dict[str, Any]]:
    """The simulator's request records of one phase, from every one of its processes.

    Each process keeps its own log and answers on the shared port: ask on fresh connections
    until every job has shown up (bounded).
    """
    found: dict[tuple[str, float | None], dict[str, Any]] = {}
    indexes: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=60)
    for _ in range(20 * cfg.sim_processes):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(f"{sim_url}/_sim/requests") as resp,
        ):
            records: list[dict[str, Any]] = await resp.json()
        for record in records:
            tag = _record_tag(record)
            if tag is not None and tag[0] == phase:
                found[(record["fingerprint"], record.get("started_at"))] = record
                indexes.add(tag[1])
        if cfg.sim_processes == 1 or len(indexes) >= cfg.jobs:
            break
    return list(found.values())


def _record_tag(record: dict[str, Any]) -> tuple[str, int] | None:
    body = record.get("body")
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    content = messages[-1].get("content")
    match = _TAG.match(content) if isinstance(content, str) else None
    return (match.group(1), int(match.group(2))) if match else None


def _worker_figures(
    parts: Parts,
    *,
    job_ids: list[str],
    run: Run,
    ready: Sample,
    logs: list[WorkerLog],
    workers: list[Child],
    rss_before: list[int],
    peak: list[int],
    sent: dict[str, float],
    transactions: int,
    other_transactions: int,
    wal_bytes: int | None,
    wal_profile: dict[str, Any],
    idle_pickups: list[float],
    histograms: dict[str, Any],
    rows: list[JobRow],
    deltas: dict[str, list[tuple[int, float]]],
    records: list[dict[str, Any]],
    exit_codes: list[int],
    stop_s: float,
) -> dict[str, Any]:
    from simulator import answer_tokens  # noqa: PLC0415 (aiohttp.web is not cheap)

    cfg, done = parts.cfg, run.done
    # The latest request per job is the attempt whose text the row kept.
    latest: dict[int, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.get("started_at") or 0.0):
        tag = _record_tag(record)
        if tag is not None:
            latest[tag[1]] = record
    chunks = sum(int(r.get("chunks_sent", 0)) for r in records)
    lags: list[float] = []
    misfits = wrong_text = 0
    for row in rows:
        request = latest.get(row.index)
        if request is None or request.get("started_at") is None:
            continue
        tokens = answer_tokens(request["body"]["messages"], cfg.tokens)
        expected = hashlib.sha256("".join(tokens).encode()).hexdigest()
        if row.status == "completed" and row.text_sha256 != expected:
            wrong_text += 1
        job_lags, job_misfits = chunk_lags(
            tokens,
            deltas.get(row.job_id, []),
            started_at=request["started_at"],
            ttft_s=cfg.ttft_s,
            tps=cfg.tps,
        )
        lags += job_lags
        misfits += job_misfits
    every, free = pickup_latencies(rows, sent, cfg.capacity)
    statuses = Counter(row.status for row in rows)
    ends = [r.completed_at for r in rows if r.completed_at is not None]
    window_s = max(ends) - run.first_send_at if ends and run.first_send_at else None
    active_s = done.at - ready.at
    text_bytes = sum(r.text_bytes for r in rows if r.status == "completed")
    worker_cpu = sum(done.worker_cpu_s)
    ready_cpu = worker_cpu - sum(ready.worker_cpu_s)
    claim_cpu = (
        worker_cpu - sum(run.first_claim.worker_cpu_s) if run.first_claim is not None else None
    )
    backend_cpu = sum(
        cpu - ready.backend_cpu_s.get(pid, 0.0) for pid, cpu in done.backend_cpu_s.items()
    )

    def per_chunk(cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not chunks else round(cpu_s / chunks * 1e6, 1)

    startups = [
        round(log.started_at - w.spawned_at, 2) if log.started_at else None
        for log, w in zip(logs, workers, strict=True)
    ]
    sim_share = (done.sim_cpu_s - ready.sim_cpu_s) / active_s
    return {
        "finished": run.finished,
        "jobs": cfg.jobs,
        "statuses": dict(statuses),
        "restarted_attempts": sum(max(r.attempts - 1, 0) for r in rows),
        "completed_text_mismatches": wrong_text,
        "window_s": None if window_s is None else round(window_s, 2),
        "jobs_per_s": ratio(statuses["completed"], window_s),
        "ideal_jobs_per_s": round(min(cfg.capacity, cfg.jobs) / cfg.stream_s, 2),
        "job_duration_s": distribution(
            [
                r.completed_at - r.started_at
                for r in rows
                if r.status == "completed" and r.completed_at and r.started_at
            ]
        ),
        "ideal_job_duration_s": round(cfg.stream_s, 2),
        "max_in_flight": max_in_flight(rows),
        "chunks": chunks,
        "chunks_per_s": ratio(chunks, window_s, 0),
        "cpu_us_per_chunk": {
            "whole_process": per_chunk(worker_cpu),
            "ready_to_done": per_chunk(ready_cpu),
            "first_claim_to_last_end": per_chunk(claim_cpu),
        },
        "cpu_s": {
            "whole_process": round(worker_cpu, 2),
            "startup": round(sum(ready.worker_cpu_s), 2),
            "ready_to_done": round(ready_cpu, 2),
        },
        "cpu_share_of_its_core": [
            round((d - r) / active_s, 3)
            for d, r in zip(done.worker_cpu_s, ready.worker_cpu_s, strict=True)
        ],
        "core_busy_share": core_busy_share(ready.cores, done.cores),
        "rss_mib": {
            "before_first_job": [round(kib / 1024, 1) for kib in rss_before],
            "peak": [round(kib / 1024, 1) for kib in peak],
        },
        "rss_kib_per_stream": round(
            sum(p - b for p, b in zip(peak, rss_before, strict=True)) / cfg.capacity, 1
        ),
        "startup_s": startups,
        "first_claim_after_first_send_s": _first_claim_delay(logs, run.first_send_at),
        "pickup_latency_s": distribution(every),
        "pickup_latency_free_slot_s": distribution(free),
        "pickup_latency_idle_s": distribution(idle_pickups),
        "visibility_lag_s": distribution(lags),
        # From the workers' own /metrics: how long a flush takes, and the lag they measure
        # (text received -> commit), as bucket bounds.
        "worker_histograms": histograms,
        # The simulator's own delays count in the lag (it is measured from the due time).
        "simulator_late_chunks_share": ratio(
            sum(int(r.get("late_chunks", 0)) for r in records), chunks, 4
        ),
        "simulator_late_max_s": max((r.get("late_max_s", 0.0) for r in records), default=None),
        "visibility_misfit_deltas": misfits,
        "db": {
            "transactions": transactions,
            "per_s": ratio(transactions, active_s, 1),
            "per_job": ratio(transactions, cfg.jobs, 1),
            "backend_cpu_s": round(backend_cpu, 2),
            "backend_cpu_us_per_chunk": per_chunk(backend_cpu),
            # WAL is cluster-wide: others' writes in the same window would be counted.
            "other_databases_transactions": other_transactions,
        },
        "wal": {
            "bytes": wal_bytes,
            "per_job": ratio(wal_bytes, cfg.jobs, 0),
            "text_bytes_per_job": ratio(text_bytes, statuses["completed"], 0),
            "wal_per_text_byte": ratio(wal_bytes, text_bytes),
            "full_page_images": done.wal_fpi - ready.wal_fpi,
            "checkpoints_during_run": done.checkpoints - ready.checkpoints,
            "by_record": _per_job(wal_profile, cfg.jobs),
        },
        "simulator_cpu_share": round(sim_share, 3),
        "moto_cpu_share": round((done.moto_cpu_s - ready.moto_cpu_s) / active_s, 3),
        "harness_cpu_share": round((done.harness_cpu_s - ready.harness_cpu_s) / active_s, 3),
        "log_warnings": dict(sum((log.problems for log in logs), Counter())),
        "exit_codes": exit_codes,
        "shutdown_s": round(stop_s, 2),
        "unsent_jobs": len(job_ids) - len(sent),
    }


def _first_claim_delay(logs: Sequence[WorkerLog], first_send_at: float | None) -> float | None:
    claims = [log.first_claim_at for log in logs if log.first_claim_at is not None]
    if not claims or first_send_at is None:
        return None
    return round(min(claims) - first_send_at, 3)


# --- baselines ------------------------------------------------------------------------------


async def _import_litellm_s(parts: Parts) -> float:
    """`import litellm` alone, on the worker's core: most of the worker's start."""
    with affinity(parts.placement.workers[0]):
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import litellm", env=child_env(), cwd=parts.run_dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    await process.wait()
    return round(time.monotonic() - began, 2)


async def _baseline_phase(parts: Parts, kind: str) -> dict[str, Any]:
    """One baseline in its own process on the worker's core; the simulator's share beside it."""
    cfg = parts.cfg
    timeout_s = cfg.deadline_s
    argv = [
        sys.executable, "-m", "worker.bench", "--baseline", kind, "--api-base", parts.sim_url,
        "--concurrency", str(cfg.concurrency), "--tokens", str(cfg.tokens),
        "--tps", f"{cfg.tps:g}", "--ttft", f"{cfg.ttft_s:g}", "--timeout", f"{timeout_s:g}",
    ]  # fmt: skip
    _note(f"baseline {kind}: {cfg.concurrency} streams")
    sim_before, began = tree_cpu_seconds(parts.sim.pid), time.monotonic()
    cores_before = core_jiffies()
    with affinity(parts.placement.workers[0]):
        process = await asyncio.create_subprocess_exec(
            *argv, env=child_env(), cwd=parts.run_dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return {"error": f"no answer within {timeout_s + 60:g} s"}
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    (parts.run_dir / f"baseline-{kind}.log").write_bytes(err)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"error": f"exit {process.returncode}: {err.decode(errors='replace')[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    elapsed = time.monotonic() - began
    result["core_busy_share"] = core_busy_share(cores_before, core_jiffies())
    result["simulator_cpu_share"] = round(
        (tree_cpu_seconds(parts.sim.pid) - sim_before) / elapsed, 3
    )
    return result


async def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """In this process: `--concurrency` streams at once, iterated to the end, no queue, no DB."""
    cpu_began = time.process_time()
    stream = await _litellm_streamer(args) if args.baseline == "litellm" else None
    session: aiohttp.ClientSession | None = None
    if stream is None:
        # limit=0: no connection cap, every stream at once as the worker would have them.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        stream = _floor_streamer(session, args.api_base)
    setup_cpu_s = time.process_time() - cpu_began
    rss_before = status_kib(os.getpid(), "VmRSS")
    cfg = Config(tokens=args.tokens, tps=args.tps, ttft_s=args.ttft)
    counter = [0, 0]  # chunks, characters of the assembled answers
    errors: Counter[str] = Counter()
    cpu_start, wall_start = time.process_time(), time.monotonic()
    complete = True
    try:
        async with asyncio.timeout(args.timeout):
            results = await asyncio.gather(
                *(
                    stream(messages_for(f"baseline-{args.baseline}", i, cfg), counter)
                    for i in range(args.concurrency)
                ),
                return_exceptions=True,
            )
        errors.update(type(r).__name__ for r in results if isinstance(r, BaseException))
    except TimeoutError:
        complete = False
    wall_s = time.monotonic() - wall_start
    share = (time.process_time() - cpu_start) / wall_s
    # LiteLLM runs its logging callbacks as tasks after a stream ends: count their CPU too.
    await asyncio.sleep(0.5)
    cpu_s = time.process_time() - cpu_start
    if session is not None:
        await session.close()
    chunks = counter[0]
    return {
        "kind": args.baseline,
        "complete": complete,
        "streams": args.concurrency,
        "chunks": chunks,
        "expected_chunks": args.concurrency * args.tokens,
        "characters": counter[1],
        "errors": dict(errors),
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_chunk": round(cpu_s / chunks * 1e6, 1) if chunks else None,
        "cpu_share_of_its_core": round(share, 3),
        "setup_cpu_s": round(setup_cpu_s, 2),
        "rss_mib": {
            "before_streams": round(rss_before / 1024, 1),
            "peak": round(status_kib(os.getpid(), "VmHWM") / 1024, 1),
        },
        "rss_kib_per_stream": round(
            (status_kib(os.getpid(), "VmHWM") - rss_before) / args.concurrency, 1
        ),
    }


Streamer = Callable[[list[dict[str, str]], list[int]], Awaitable[None]]


async def _litellm_streamer(args: argparse.Namespace) -> Streamer:
    """LiteLLM out of the box: `acompletion(stream=True)` iterated to the end."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import: stay offline
    import litellm  # noqa: PLC0415, TID251 (this baseline measures LiteLLM itself, alone)

    litellm.suppress_debug_info = True
    api_base = f"{args.api_base}/v1"

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        response = await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=api_base,
            api_key=API_KEY,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            num_retries=0,
        )
        parts: list[str] = []
        async for chunk in response:
            if chunk.choices and (text := chunk.choices[0].delta.content):
                parts.append(text)
                counter[0] += 1
        counter[1] += len("".join(parts))

    return stream


def _floor_streamer(session: aiohttp.ClientSession, api_base: str) -> Streamer:
    """The practical floor: aiohttp, one json.loads per `data:` line, the delta's content."""
    url = f"{api_base}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        body = {
            "model": MODEL,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        parts: list[str] = []
        async with session.post(url, json=body, headers=headers) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = json.loads(line[6:])["choices"]
                if choices and (text := choices[0]["delta"].get("content")):
                    parts.append(text)
                    counter[0] += 1
        counter[1] += len("".join(parts))

    return stream


# --- the report -----------------------------------------------------------------------------

NOTES = [
    "chunks are content chunks (one answer token each); role, finish and usage events are "
    "not counted, for the worker and the baselines alike",
    "worker CPU is utime+stime from /proc/<pid>/stat: whole_process includes startup (the "
    "LiteLLM import); ready_to_done runs from worker_started to the last job's end; "
    "first_claim_to_last_end as sampled by the harness every 0.1 s",
    "pickup latency: the row's started_at minus when the harness's SendMessage returned; "
    "free_slot counts only jobs that, when sent, fit in the workers' free slots (the rest "
    "also waited for other jobs to finish); idle: one-token probe jobs sent one at a time "
    "before the run, each 0.2 s after the last one ended",
    "visibility lag: per chunk, its delta row's created_at (now() of the flush's "
    "transaction, a few ms before commit) minus when the simulator sent the chunk "
    "(request start + ttft + k / tps); simulator_late_chunks_share is the share of chunks "
    "the simulator itself sent over 50 ms after that time (its core was busy)",
    "db transactions: pg_stat_database xact_commit + xact_rollback of the bench database "
    "from the worker being ready until it exited (each autocommit statement is one "
    "transaction; asyncpg's first use of a statement adds a prepare); the harness's own "
    "queries go to another database",
    "WAL: pg_current_wal_lsn() difference, cluster-wide (other databases' writes count too); "
    "a checkpoint during the run adds a full-page image for every page touched after it",
    "baselines: each in its own process on the worker's core, after the worker phase, "
    "same simulator, streams, tokens and pace, uvloop; CPU from process_time() around the "
    "streams (imports excluded); LiteLLM out of the box (its aiohttp transport caps 500 "
    "connections per host)",
    "PostgreSQL runs unpinned: its backends may use the worker's core (see core_busy_share)",
]


def _report(
    cfg: Config,
    *,
    placement: Placement,
    worker: dict[str, Any],
    baselines: dict[str, Any],
    import_litellm_s: float,
    server_version: str,
    duration_s: float,
    load_before: list[float],
) -> dict[str, Any]:
    warnings = _warnings(cfg, placement=placement, worker=worker, baselines=baselines)
    worker_us = worker["cpu_us_per_chunk"]["ready_to_done"]
    ratios = {
        f"worker_vs_{kind}": ratio(worker_us, result.get("cpu_us_per_chunk"))
        for kind, result in baselines.items()
    }
    return {
        "label": cfg.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_before": load_before,
            "postgres": server_version,
        },
        "config": {
            **asdict(cfg),
            "database_url": _without_password(cfg.database_url),
            "max_waiting": cfg.waiting_limit,
            "timeout_s": cfg.deadline_s,
        },
        "placement": placement.as_json(),
        "worker": worker,
        "baselines": baselines,
        "ratios_cpu_us_per_chunk": ratios,
        # The worker's start is mostly this import, measured alone on the worker's core.
        "import_litellm_s": import_litellm_s,
        "warnings": warnings,
        "notes": NOTES,
    }


def _warnings(
    cfg: Config, *, placement: Placement, worker: dict[str, Any], baselines: dict[str, Any]
) -> list[str]:
    """What makes a figure suspect, and which part was the bottleneck."""
    single = cfg.workers == 1
    sim, moto = worker["simulator_cpu_share"], worker["moto_cpu_share"]
    core = f"cpu{min(placement.workers[0] or {0})}"
    busy = worker["core_busy_share"].get(core, 0.0)
    foreign = busy - worker["cpu_share_of_its_core"][0]
    stretch = (worker["job_duration_s"]["p50"] or 0.0) / cfg.stream_s
    checks = [
        (not worker["finished"], f"not every job ended within the {cfg.deadline_s:g} s deadline"),
        (
            worker["statuses"].get("completed", 0) != cfg.jobs,
            f"not every job completed: {worker['statuses']}",
        ),
        (
            worker["completed_text_mismatches"] > 0,
            "completed jobs whose text differs from the simulator's answer",
        ),
        (sim > SIM_CPU_WARN, "the simulator used over 80% of its core: it may be the bottleneck"),
        (single and sim + moto > SATURATED, "simulator + moto used over 90% of their shared core"),
        (
            any(share > SATURATED for share in worker["cpu_share_of_its_core"]),
            "a worker used over 90% of its core: the worker is the bottleneck",
        ),
        (not single, "two workers: the simulator and moto share the cores with them"),
        (
            single and foreign > FOREIGN_LOAD_WARN,
            f"other processes (PostgreSQL, anything else running) kept {core} busy "
            f"{foreign:.0%} of the time beside the worker: CPU figures may be skewed",
        ),
        (
            single and busy > SATURATED,
            f"{core}, the worker's core, was saturated: the worker could not keep up "
            "(throughput, pickup and visibility figures show a CPU-bound worker)",
        ),
        (
            stretch > STRETCHED,
            f"the median job took {stretch:.2f}x the simulator's pace: the worker could not "
            "keep up (CPU-bound), so pickup and visibility figures include its backlog",
        ),
        (
            worker["db"]["other_databases_transactions"] > OTHER_DB_WARN,
            f"other databases ran {worker['db']['other_databases_transactions']} transactions "
            "during the run: the cluster-wide WAL figure includes their writes",
        ),
    ]
    warnings = [message for failed, message in checks if failed]
    for kind, result in baselines.items():
        if "error" in result or not result.get("complete", False):
            warnings.append(f"baseline {kind} did not finish: {result.get('error', 'deadline')}")
        elif result.get("simulator_cpu_share", 0) > SIM_CPU_WARN:
            warnings.append(f"the simulator used over 80% of its core during baseline {kind}")
        elif result.get("cpu_share_of_its_core", 0) > SATURATED:
            warnings.append(
                f"baseline {kind} saturated its core (reads then batch several events, which "
                "lowers the cost per chunk a little)"
            )
    return warnings


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 (optional; the worker runs on it when installed)
    except ImportError:
        return None
    return uvloop.new_event_loop


# --- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    parser.add_argument("--jobs", type=int, help="jobs to run (standard 400)")
    parser.add_argument("--concurrency", type=int, help="WORKER_CONCURRENCY (standard 200)")
    parser.add_argument("--tokens", type=int, help="chunks per answer (standard 200)")
    parser.add_argument("--tps", type=float, help="chunks per second per stream (standard 20)")
    parser.add_argument("--ttft", type=float, help="seconds to the first chunk (standard 0.2)")
    parser.add_argument("--flush-interval", type=float, help="WORKER_FLUSH_INTERVAL_S (0.4)")
    parser.add_argument("--content-refresh", type=float, help="WORKER_CONTENT_REFRESH_S (1)")
    parser.add_argument("--workers", type=int, choices=(1, 2), help="worker processes (1)")
    parser.add_argument("--label", help="names the result file (default: the preset)")
    parser.add_argument("--skip-baselines", action="store_true", default=None)
    parser.add_argument("--database-url", help=f"an admin DSN (default {DEFAULT_DATABASE_URL})")
    parser.add_argument("--sim-processes", type=int, help="simulator processes (1)")
    parser.add_argument("--max-waiting", type=int, help="messages kept waiting in the queue")
    parser.add_argument("--timeout", type=float, help="seconds before giving up on the jobs")
    parser.add_argument(
        "--worker-cpu-quota",
        type=float,
        help="cap each worker at this share of a core (cgroup v1, root); for --workers 2 scaling",
    )
    # Internal: one baseline in this process (the harness starts these).
    parser.add_argument("--baseline", choices=("litellm", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--api-base", help=argparse.SUPPRESS)
    return parser


def config_from(args: argparse.Namespace) -> Config:
    overrides = {
        name: value
        for name, value in {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "tokens": args.tokens,
            "tps": args.tps,
            "ttft_s": args.ttft,
            "flush_interval_s": args.flush_interval,
            "content_refresh_s": args.content_refresh,
            "workers": args.workers,
            "label": args.label,
            "skip_baselines": args.skip_baselines,
            "database_url": args.database_url,
            "sim_processes": args.sim_processes,
            "max_waiting": args.max_waiting,
            "timeout_s": args.timeout,
            "worker_cpu_quota": args.worker_cpu_quota,
        }.items()
        if value is not None
    }
    cfg = replace(PRESETS[args.preset], **overrides)
    if min(cfg.jobs, cfg.concurrency, cfg.tokens, cfg.sim_processes) < 1 or cfg.tps <= 0:
        raise SystemExit("jobs, concurrency, tokens, sim-processes and tps must be positive")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline:
        if not args.api_base:
            raise SystemExit("--baseline needs --api-base")
        args.concurrency = args.concurrency or PRESETS["standard"].concurrency
        args.tokens = args.tokens or PRESETS["standard"].tokens
        args.tps = args.tps or PRESETS["standard"].tps
        args.ttft = PRESETS["standard"].ttft_s if args.ttft is None else args.ttft
        args.timeout = args.timeout or 600.0
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            print(json.dumps(runner.run(run_baseline(args))), flush=True)
        return 0
    cfg = config_from(args)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(run_benchmark(cfg))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}-{cfg.label}.json"
    text = json.dumps(report, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    print(text)
    _note(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
