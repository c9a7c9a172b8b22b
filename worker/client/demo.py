"""`streaming-worker demo`: the whole pipeline on this machine, with no AWS account and no keys.

An in-process SQS server (moto), the LLM simulator, a PostgreSQL (DATABASE_URL, else the local
server's `streaming_worker_demo` database, else an embedded one from the `pgserver` package),
N plain jobs plus a thinking job and a tool-calling job submitted as the app does, the worker
draining them, a live view of every answer growing (`demo_view`), and a summary table that
checks each row against what the simulator sent. Ctrl-C stops the worker gracefully and still
prints the summary.
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
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

import simulator
from worker import app
from worker.client import commands, queries
from worker.client.demo_view import DemoJob, LiveView
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
THINKING_PROMPT = "Think it over first: when is a retried write safe?"
TOOL_PROMPT = "What is the weather in Lisbon right now?"
# The tool the tool-calling job defines (options.tools); the simulator fills its arguments.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
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
    reasoning_tokens: int = 60  # the thinking job's, before its answer
    think_s: float = 1.5  # how long the thinking job thinks

    @classmethod
    def short(cls) -> DemoOptions:
        """A few small, fast jobs: the whole pipeline in a few seconds, for CI."""
        return cls(
            jobs=3,
            tokens=24,
            tokens_per_s=200.0,
            concurrency=5,
            ttft_s=0.05,
            reasoning_tokens=12,
            think_s=0.2,
        )


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
                jobs = demo_jobs(options)
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
                job_ids = await _submit(settings, [job.request for job in jobs])
                print(
                    f"submitted {len(job_ids)} jobs as the app does (row, then SQS message):"
                    f" {options.jobs} plain, one thinking, one calling a tool;"
                    f" worker concurrency {options.concurrency}; Ctrl-C stops it gracefully",
                    flush=True,
                )
                view = LiveView(jobs=dict(zip(job_ids, jobs, strict=True)), tty=sys.stdout.isatty())
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


def demo_jobs(options: DemoOptions) -> list[DemoJob]:
    """The plain jobs, then a thinking job and a tool-calling job, with what the simulator
    will answer each (its answers are derived from the conversation)."""
    jobs = []
    for index in range(options.jobs):
        request = _request(f"{PROMPTS[index % len(PROMPTS)]} (demo job {index + 1})", options)
        answer = simulator.answer_text(request["messages"], options.tokens)
        jobs.append(DemoJob("answer", request, answer, tokens=options.tokens))
    thinking = _request(
        f"{THINKING_PROMPT} [[sim reasoning={options.reasoning_tokens} think_s={options.think_s}]]",
        options,
    )
    jobs.append(
        DemoJob(
            "thinking",
            thinking,
            simulator.answer_text(thinking["messages"], options.tokens),
            tokens=options.tokens + options.reasoning_tokens,
            reasoning=simulator.expected_reasoning(thinking["messages"], options.reasoning_tokens),
        )
    )
    tools = _request(f"{TOOL_PROMPT} [[sim tools=1]]", options, tools=[WEATHER_TOOL])
    calls = simulator.expected_tool_calls(tools["messages"], [WEATHER_TOOL])
    jobs.append(
        DemoJob(
            "tools",
            tools,
            "",
            # Each call's arguments stream in three pieces (the simulator's default), a token each.
            tokens=3 * len(calls),
            tool_calls=tuple(
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ),
        )
    )
    return jobs


def _request(
    prompt: str, options: DemoOptions, *, tools: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return build_request(
        model="sim-model",
        prompt=prompt,
        temperature=0.2,
        max_tokens=options.tokens,
        tools=tools,
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
            rows = {row["id"]: row for row in await queries.job_rows(db, list(view.jobs))}
            view.update(rows)
            if worker.done():
                return rows
            await asyncio.sleep(REFRESH_S)
