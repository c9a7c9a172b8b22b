"""Fixtures for the app-side CLI's tests: one worker serving a queue, and the CLI run as a
process against it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import AWS_ENV, SIM_API_KEY
from tests.support import REPO, spawn, worker_command

CLI_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Any]


@pytest.fixture(scope="module")
def served_env(
    database_url: str, sqs_endpoint: str, models_file: Path, logs_dir: Path
) -> Iterator[dict[str, str]]:
    """One worker for the module, on its own queue: the CLI talks to a running system."""
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"client-cli-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    env = {
        **AWS_ENV,
        "DATABASE_URL": database_url,
        "SQS_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "WORKER_MODELS_FILE": str(models_file),
        "WORKER_METRICS_PORT": "0",
        "WORKER_FLUSH_INTERVAL_S": "0.05",
        "WORKER_RECEIVE_WAIT_S": "1",
        "WORKER_LOG_FORMAT": "json",
        "SIM_API_KEY": SIM_API_KEY,
    }
    worker = spawn(worker_command("run"), env=env, log_path=logs_dir / "client-cli-worker.log")
    yield env
    worker.stop()


@pytest.fixture
def cli(served_env: dict[str, str]) -> Cli:
    """Run `streaming-worker ARGS` against the served queue (or `SQS_QUEUE_URL=` another)."""

    async def run(*args: str, **env: str) -> Result:
        process = await asyncio.create_subprocess_exec(
            *worker_command(*args),
            env={**os.environ, **served_env, **env},
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        assert process.returncode is not None
        return Result(process.returncode, stdout.decode(), stderr.decode())

    return run


def _worker_streams_rich_answers() -> bool:
    """Whether this tree's OpenAI-format reader yields reasoning and tool calls: on the
    branch that built the client's view of them it does not yet (branch `lean` adds it)."""
    reader = (REPO / "worker" / "llm" / "openai_sse.py").read_text(encoding="utf-8")
    return "ToolCallDelta" in reader and "ReasoningDelta" in reader


# Strict: once the worker streams rich answers these tests must pass, not merely may.
needs_rich_worker = pytest.mark.xfail(
    not _worker_streams_rich_answers(),
    reason="the worker's OpenAI-format reader drops reasoning and tool calls here",
    strict=True,
)
