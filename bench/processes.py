"""The processes the benchmark starts: spawning them pinned, waiting for them, stopping them,
their environment, and which cores each part runs on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.config import AWS_ENV, HOST, POLL_S, REPO, BenchError
from bench.procfs import affinity

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


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


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        **AWS_ENV,
        "PYTHONPATH": path,  # this checkout's code, whatever is installed
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        **(extra or {}),
    }


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
