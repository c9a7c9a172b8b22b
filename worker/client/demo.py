"""`streaming-worker demo`: the whole pipeline on this machine, with no AWS account and no keys.

An in-process SQS server (moto), the LLM simulator, a PostgreSQL (DATABASE_URL, else the local
server's `streaming_worker_demo` database, else an embedded one from the `pgserver` package),
N jobs submitted as the app does, the worker draining them, a live view of every answer
growing, and a summary table. Ctrl-C stops the worker gracefully and still prints the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

import simulator
from worker import app
from worker.client import commands, queries
from worker.client.request import build_request
from worker.postgres import Database
from worker.queue import JobQueue
from worker.settings import Settings
from worker.store import JobStore
from worker.supervisor import Mode

LOCAL_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEMO_DATABASE = "streaming_worker_demo"
REGION = "us-east-1"
PROMPTS = (
    "Explain how a debounced writer batches updates.",
    "Write a haiku about message queues.",
    "Why do long-running LLM requests break API gateways?",
    "Summarise at-least-once delivery in two sentences.",
    "List three ways to make a worker shut down gracefully.",
    "Describe exactly-once text streaming to a database.",
)
BAR_WIDTH = 28
REFRESH_S = 0.2


class DemoError(Exception):
    """The demo cannot run here; the message says what to install or set."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    jobs: int = 8
    tokens: int = 120
    tokens_per_s: float = 40.0
    concurrency: int = 8
    ttft_s: float = 0.2

    @classmethod
    def short(cls) -> DemoOptions:
        """A few small, fast jobs: the whole pipeline in a few seconds, for CI."""
        return cls(jobs=3, tokens=24, tokens_per_s=200.0, concurrency=3, ttft_s=0.05)


async def run_demo(options: DemoOptions, *, embedded_postgres: bool = False) -> int:
    """Run the demo; returns the worker's `--drain` exit code."""
    # Only ever talks to the local SQS server below; never use a real account's credentials.
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",  # noqa: S106 (the local moto server takes any key)
        AWS_REGION=REGION,
    )
    async with _database(embedded=embedded_postgres) as (database_url, where):
        print(f"PostgreSQL: {where}", flush=True)
        with _sqs_server() as sqs_endpoint, tempfile.TemporaryDirectory() as tmp:
            config = simulator.SimulatorConfig(
                tokens=options.tokens, tokens_per_s=options.tokens_per_s, ttft_s=options.ttft_s
            )
            async with _simulator(config) as llm_url:
                models_file = Path(tmp) / "models.yaml"
                models_file.write_text(yaml.safe_dump(_models(llm_url)), encoding="utf-8")
                queue_url = await JobQueue.create(
                    "streaming-jobs-demo", region=REGION, endpoint_url=sqs_endpoint
                )
                requests = [_request(index, options.tokens) for index in range(options.jobs)]
                settings = Settings(
                    DATABASE_URL=database_url,
                    SQS_QUEUE_URL=queue_url,
                    AWS_ENDPOINT_URL_SQS=sqs_endpoint,
                    models_file=models_file,
                    concurrency=options.concurrency,
                    metrics_port=0,
                    # Ctrl-C should end the demo promptly: unfinished jobs are handed back.
                    shutdown_grace_s=2.0,
                    log_level="warning",
                )
                job_ids = await _submit(settings, requests)
                print(
                    f"submitted {len(job_ids)} jobs as the app does (row, then SQS message);"
                    f" worker concurrency {options.concurrency}; Ctrl-C stops it gracefully",
                    flush=True,
                )
                view = LiveView(
                    expected={
                        job_id: simulator.answer_text(request["messages"], options.tokens)
                        for job_id, request in zip(job_ids, requests, strict=True)
                    },
                    tokens=options.tokens,
                    tty=sys.stdout.isatty(),
                )
                worker = asyncio.create_task(app.run_worker(settings, mode=Mode.DRAIN))
                rows = await _watch(database_url, view, worker)
                exit_code = await worker
    view.print_summary(rows)
    return exit_code


@contextlib.asynccontextmanager
async def _database(*, embedded: bool) -> AsyncIterator[tuple[str, str]]:
    """DATABASE_URL, else the local server, else an embedded PostgreSQL for this run only."""
    url = os.environ.get("DATABASE_URL")
    if url and not embedded:
        yield url, "DATABASE_URL"
        return
    if not embedded:
        try:
            url = await _local_database()
        except Exception as error:  # noqa: BLE001 (any failure: fall back to the embedded one)
            print(
                f"no local PostgreSQL ({type(error).__name__}): using an embedded one", flush=True
            )
        else:
            yield url, f"local server, database {DEMO_DATABASE}"
            return
    async with _embedded_database() as (url, data_dir):
        yield url, f"embedded (pgserver) in {data_dir}, deleted when the demo ends"


async def _local_database() -> str:
    async with await Database.connect(LOCAL_SERVER_DSN) as db:
        await queries.create_database(db, DEMO_DATABASE)
    return LOCAL_SERVER_DSN.rsplit("/", 1)[0] + "/" + DEMO_DATABASE


@contextlib.asynccontextmanager
async def _embedded_database() -> AsyncIterator[tuple[str, Path]]:
    """PostgreSQL from the `pgserver` wheel, on a Unix socket in a temporary directory."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server  # noqa: PLC0415 (the `demo` extra)
    except ImportError:
        raise DemoError(
            "no PostgreSQL reachable on 127.0.0.1:5432 and the embedded one is not installed:"
            " pip install -e '.[demo]' (make demo does), or set DATABASE_URL"
        ) from None
    # /tmp, not the home directory: run as root, pgserver opens the data directory's parents
    # to its own `pgserver` system user.
    parent = Path(tempfile.mkdtemp(prefix="streaming-worker-demo-"))
    server = await asyncio.to_thread(get_server, parent / "pgdata", cleanup_mode="delete")
    try:
        async with await Database.connect(server.get_uri("postgres")) as db:
            await queries.create_database(db, DEMO_DATABASE)
        yield server.get_uri(DEMO_DATABASE), parent
    finally:
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def _sqs_server() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 (a dev-only dependency)
    except ImportError:
        raise DemoError("the demo needs moto's server: pip install -e '.[dev]'") from None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per SQS call
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _simulator(config: simulator.SimulatorConfig) -> AsyncIterator[str]:
    runner = web.AppRunner(simulator.build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _models(llm_url: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "sim-model",
                "litellm_params": {
                    "model": "openai/sim-model",
                    "api_base": f"{llm_url}/v1",
                    "api_key": "sk-simulator-not-a-secret",
                },
            }
        ]
    }


def _request(index: int, tokens: int) -> dict[str, Any]:
    prompt = PROMPTS[index % len(PROMPTS)]
    return build_request(
        model="sim-model",
        prompt=f"{prompt} (demo job {index + 1})",
        temperature=0.2,
        max_tokens=tokens,
    )


async def _submit(settings: Settings, requests: list[dict[str, Any]]) -> list[uuid.UUID]:
    store = await JobStore.connect(settings.database_url.get_secret_value(), pool_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()
    return await commands.submit(settings, requests)


async def _watch(
    database_url: str, view: LiveView, worker: asyncio.Task[int]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Poll the rows as a browser would and redraw the view, until the worker exits."""
    async with await Database.connect(database_url) as db:
        while True:
            rows = {row["id"]: row for row in await queries.job_rows(db, list(view.expected))}
            view.update(rows)
            if worker.done():
                return rows
            await asyncio.sleep(REFRESH_S)


@dataclass
class LiveView:
    """One progress bar per job with its speed; on a pipe, one line per event instead."""

    expected: dict[uuid.UUID, str]
    tokens: int
    tty: bool
    started: float = field(default_factory=time.monotonic)
    first_text_at: dict[uuid.UUID, float] = field(default_factory=dict)
    announced: set[uuid.UUID] = field(default_factory=set)
    drawn_lines: int = 0

    def update(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        now = time.monotonic()
        for job_id, row in rows.items():
            if row["partial_content"] and job_id not in self.first_text_at:
                self.first_text_at[job_id] = now
                if not self.tty and len(self.first_text_at) == 1:
                    print(f"first tokens after {now - self.started:.1f} s", flush=True)
        if self.tty:
            self._redraw(rows, now)
        else:
            self._log_finished(rows)

    def _redraw(self, rows: dict[uuid.UUID, dict[str, Any]], now: float) -> None:
        lines = [self._bar_line(job_id, rows.get(job_id, {}), now) for job_id in self.expected]
        done = sum(1 for row in rows.values() if _ended(row))
        total_tokens = sum(self._tokens_so_far(job_id, rows.get(job_id, {})) for job_id in rows)
        elapsed = now - self.started
        lines.append(
            f"{done}/{len(self.expected)} done · {elapsed:5.1f} s · "
            f"{total_tokens / elapsed if elapsed else 0:6.0f} tok/s in all"
        )
        up = f"\x1b[{self.drawn_lines}F" if self.drawn_lines else ""
        sys.stdout.write(up + "".join(f"{line}\x1b[K\n" for line in lines))
        sys.stdout.flush()
        self.drawn_lines = len(lines)

    def _bar_line(self, job_id: uuid.UUID, row: dict[str, Any], now: float) -> str:
        answer = self.expected[job_id]
        text = row.get("partial_content", "")
        filled = int(BAR_WIDTH * len(text) / max(len(answer), 1))
        bar = "█" * filled + "·" * (BAR_WIDTH - filled)
        tokens = self._tokens_so_far(job_id, row)
        return (
            f"{str(job_id)[:8]}  {row.get('status', '?'):<10} {bar} "
            f"{tokens:>4}/{self.tokens} tok {self._rate(job_id, row, now):6.1f} tok/s"
        )

    def _tokens_so_far(self, job_id: uuid.UUID, row: dict[str, Any]) -> int:
        usage = (row.get("response_data") or {}).get("usage") or {}
        if "completion_tokens" in usage:
            return int(usage["completion_tokens"])
        # While streaming, the share of the known answer already written.
        answer = self.expected[job_id]
        return round(self.tokens * len(row.get("partial_content", "")) / max(len(answer), 1))

    def _rate(self, job_id: uuid.UUID, row: dict[str, Any], now: float) -> float:
        finished = _stream_rate(row.get("response_data"))
        if finished is not None:
            return finished
        since = self.first_text_at.get(job_id)
        if since is None or now <= since:
            return 0.0
        return self._tokens_so_far(job_id, row) / (now - since)

    def _log_finished(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        for job_id, row in rows.items():
            if job_id in self.announced or not _ended(row):
                continue
            self.announced.add(job_id)
            rate = _stream_rate(row["response_data"])
            speed = "" if rate is None else f", {rate:.0f} tok/s"
            print(
                f"{str(job_id)[:8]} {row['status']}: {self._tokens_so_far(job_id, row)} tokens"
                f"{speed} ({len(self.announced)}/{len(self.expected)})",
                flush=True,
            )

    def print_summary(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        wall_s = time.monotonic() - self.started
        print(
            f"\n{'job':<8}  {'status':<10} {'exact':<5} {'tokens':>6} {'ttft ms':>7} {'tok/s':>6}"
        )
        exact = 0
        for job_id, answer in self.expected.items():
            row = rows[job_id]
            response = row["response_data"] or {}
            usage = response.get("usage") or {}
            matches = row["status"] == "completed" and row["partial_content"] == answer
            exact += matches
            print(
                f"{str(job_id)[:8]}  {row['status']:<10} {'yes' if matches else 'no':<5}"
                f" {usage.get('completion_tokens', 0):>6} {response.get('ttft_ms') or 0:>7}"
                f" {_stream_rate(response) or 0.0:>6.1f}"
            )
        completed = sum(1 for row in rows.values() if row["status"] == "completed")
        print(
            f"\n{completed}/{len(self.expected)} completed, {exact} byte-exact,"
            f" {wall_s:.1f} s wall, {completed / wall_s:.2f} jobs/s"
        )
        unfinished = sum(1 for row in rows.values() if not _ended(row))
        if unfinished:
            print(
                f"stopped early: {unfinished} jobs did not finish and were handed back"
                " (status pending, message visible again)"
            )


def _ended(row: dict[str, Any]) -> bool:
    return row.get("status") in ("completed", "failed", "cancelled")


def _stream_rate(response: dict[str, Any] | None) -> float | None:
    """Tokens per second while streaming: after the first token, to the end."""
    if not response:
        return None
    tokens = (response.get("usage") or {}).get("completion_tokens")
    duration_ms, ttft_ms = response.get("duration_ms"), response.get("ttft_ms") or 0
    if not tokens or not duration_ms or duration_ms <= ttft_ms:
        return None
    return float(tokens) / ((float(duration_ms) - float(ttft_ms)) / 1000)
