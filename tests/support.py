"""Helpers the tests share: real processes on free ports, polling with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def one_at_a_time(name: str) -> Iterator[None]:
    """Across pytest-xdist processes (and other runs on this machine): the holder of `name`
    runs alone, the others wait for it, then usually find its work done."""
    lock_path = Path(tempfile.gettempdir()) / f"streaming-worker-{name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something other than None/False, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(interval_s)


@dataclass
class Process:
    """A child process whose stderr is kept in a file the test can read."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 10) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()
        return self.popen.returncode

    async def wait(self, timeout_s: float = 60) -> int:
        deadline = time.monotonic() + timeout_s
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process did not exit within {timeout_s} s:\n{self.output}")
            await asyncio.sleep(0.05)
        return self.popen.returncode


def spawn(
    args: list[str], *, env: dict[str, str] | None = None, log_path: Path, stdout: int | None = None
) -> Process:
    log = log_path.open("wb")
    popen = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=stdout if stdout is not None else log,
        stderr=log,
        cwd=REPO,
    )
    return Process(popen=popen, log_path=log_path, _log=log)


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


class TcpProxy:
    """A TCP proxy in front of a server, so a test can cut or refuse its connections."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = free_port()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones: the server looks down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()

    def cut(self) -> None:
        """Drop every open connection at once, as a server restart would."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self._target)
        except OSError:
            client.transport.abort()
            return
        self._writers |= {client, upstream}
        await asyncio.gather(
            _pipe(client_reader, upstream), _pipe(upstream_reader, client), return_exceptions=True
        )
        for writer in (client, upstream):
            self._writers.discard(writer)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()
