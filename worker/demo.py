"""`streaming-worker demo`: the whole pipeline on this machine, with no AWS account and no keys.

An in-process SQS server (moto), the LLM simulator, a local PostgreSQL (DATABASE_URL, else
the local server's `streaming_worker_demo` database), N jobs submitted as the app does, the
worker draining them, a live view of every answer growing, and a summary table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from worker import app, simulator
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


async def run_demo(*, jobs: int, tokens: int, tokens_per_s: float, concurrency: int) -> int:
    """Run the demo; returns the worker's `--drain` exit code."""
    # Only ever talks to the local SQS server below; never use a real account's credentials.
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",  # noqa: S106 (the local moto server takes any key)
        AWS_REGION=REGION,
    )
    database_url = os.environ.get("DATABASE_URL") or await _local_database()
    with _sqs_server() as sqs_endpoint, tempfile.TemporaryDirectory() as tmp:
        config = simulator.SimulatorConfig(tokens=tokens, tokens_per_s=tokens_per_s, ttft_s=0.2)
        async with _simulator(config) as llm_url:
            models_file = Path(tmp) / "models.yaml"
            models_file.write_text(yaml.safe_dump(_models(llm_url)), encoding="utf-8")
            queue_url = await JobQueue.create(
                "streaming-jobs-demo", region=REGION, endpoint_url=sqs_endpoint
            )
            requests = [_request(index, tokens) for index in range(jobs)]
            job_ids = await _submit(database_url, queue_url, sqs_endpoint, requests)
            settings = Settings(
                DATABASE_URL=database_url,
                SQS_QUEUE_URL=queue_url,
                AWS_ENDPOINT_URL_SQS=sqs_endpoint,
                models_file=models_file,
                concurrency=concurrency,
                metrics_port=0,
                log_level="warning",
            )
            started = time.monotonic()
            worker = asyncio.create_task(app.run_worker(settings, mode=Mode.DRAIN))
            expected = {
                job_id: simulator.answer_text(request["messages"], tokens)
                for job_id, request in zip(job_ids, requests, strict=True)
            }
            rows = await _watch(database_url, expected, worker)
            exit_code = await worker
    _print_summary(rows, expected, time.monotonic() - started)
    return exit_code


async def _local_database() -> str:
    store = await JobStore.connect(LOCAL_SERVER_DSN, pool_size=1)
    try:
        await store.create_database(DEMO_DATABASE)
    finally:
        await store.close()
    return LOCAL_SERVER_DSN.rsplit("/", 1)[0] + "/" + DEMO_DATABASE


@contextlib.contextmanager
def _sqs_server() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 (a dev-only dependency)
    except ImportError:
        raise SystemExit("the demo needs moto's server: pip install -e '.[dev]'") from None
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
    return {
        "model": "sim-model",
        "messages": [{"role": "user", "content": f"{prompt} (demo job {index + 1})"}],
        "options": {"temperature": 0.2, "max_tokens": tokens},
    }


async def _submit(
    database_url: str, queue_url: str, endpoint: str, requests: list[dict[str, Any]]
) -> list[uuid.UUID]:
    store = await JobStore.connect(database_url, pool_size=2)
    try:
        await store.migrate()
        job_ids = [await store.insert_job(request) for request in requests]
    finally:
        await store.close()
    async with JobQueue.open(queue_url, region=REGION, endpoint_url=endpoint) as queue:
        for job_id in job_ids:
            await queue.send(job_id)
    return job_ids


async def _watch(
    database_url: str, expected: dict[uuid.UUID, str], worker: asyncio.Task[int]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Poll the rows as a browser would and draw one progress bar per job."""
    store = await JobStore.connect(database_url, pool_size=1)
    drawn = 0
    try:
        while True:
            rows = {row["id"]: row for row in await store.job_rows(list(expected))}
            drawn = _draw(rows, expected, drawn)
            if worker.done():
                return rows
            await asyncio.sleep(0.25)
    finally:
        await store.close()


def _draw(rows: dict[uuid.UUID, dict[str, Any]], expected: dict[uuid.UUID, str], drawn: int) -> int:
    """Redraw the bars on a terminal; elsewhere print a line when a job finishes."""
    lines = []
    for job_id, answer in expected.items():
        row = rows.get(job_id, {})
        text = row.get("partial_content", "")
        done = len(text) / max(len(answer), 1)
        bar = "█" * int(done * 30) + "·" * (30 - int(done * 30))
        lines.append(f"{str(job_id)[:8]}  {row.get('status', '?'):<10} {bar} {len(text):>5} chars")
    if sys.stdout.isatty():
        if drawn:
            sys.stdout.write(f"\x1b[{drawn}F")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return len(lines)
    finished = sum(1 for row in rows.values() if row["status"] in ("completed", "failed"))
    if finished != drawn:
        print(f"{finished}/{len(expected)} jobs finished", flush=True)
    return finished


def _print_summary(
    rows: dict[uuid.UUID, dict[str, Any]], expected: dict[uuid.UUID, str], wall_s: float
) -> None:
    print(f"\n{'job':<8}  {'status':<10} {'exact':<5} {'tokens':>6} {'ttft ms':>7} {'tok/s':>6}")
    exact = 0
    for job_id, answer in expected.items():
        row = rows[job_id]
        response = row["response_data"] or {}
        usage = response.get("usage") or {}
        tokens = usage.get("completion_tokens", 0)
        duration_s = (response.get("duration_ms") or 0) / 1000
        rate = tokens / duration_s if duration_s else 0.0
        matches = row["partial_content"] == answer
        exact += matches
        print(
            f"{str(job_id)[:8]}  {row['status']:<10} {'yes' if matches else 'NO':<5}"
            f" {tokens:>6} {response.get('ttft_ms') or 0:>7} {rate:>6.1f}"
        )
    completed = sum(1 for row in rows.values() if row["status"] == "completed")
    print(
        f"\n{completed}/{len(expected)} completed, {exact} byte-exact,"
        f" {wall_s:.1f} s wall, {len(expected) / wall_s:.2f} jobs/s"
    )
