"""Real parts for every test: PostgreSQL, moto's SQS server and the LLM simulator, each real."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read and write rows as the app and its clients do)
import boto3
import pytest
import yaml
from xdist.scheduler import LoadScopeScheduling

from tests.support import Process, eventually, free_port, spawn, worker_command

ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
os.environ.update(AWS_ENV)
# Some tests run the worker in this process: LiteLLM must stay offline here too.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def database_url(logs_dir: Path) -> Iterator[str]:
    """A throwaway database for the session, migrated by `streaming-worker migrate`."""
    name = f"sw_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    migrated = subprocess.run(
        worker_command("migrate"),
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    yield dsn
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqs_endpoint(logs_dir: Path) -> Iterator[str]:
    """moto's SQS server as its own process on a free port."""
    port = free_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    process = spawn(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)], log_path=logs_dir / "moto.log"
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/moto-api/", process)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def simulator_url(logs_dir: Path) -> Iterator[str]:
    """The project's LLM simulator, as a separate process, fast by default."""
    log_path = logs_dir / "simulator.log"
    process = spawn(
        [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            "0",
            "--tokens",
            "40",
            "--tokens-per-s",
            "400",
            "--ttft-s",
            "0.01",
        ],
        log_path=log_path,
        stdout=subprocess.PIPE,
    )
    assert process.popen.stdout is not None
    line = process.popen.stdout.readline().decode()
    assert line.startswith("simulator listening on "), process.output
    yield line.split()[-1]
    process.stop()


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory, simulator_url: str) -> Path:
    path = tmp_path_factory.mktemp("config") / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "sim-model",
                        "litellm_params": {
                            "model": "openai/sim-model",
                            "api_base": f"{simulator_url}/v1",
                            "api_key": "os.environ/SIM_API_KEY",
                        },
                        "model_info": {
                            "input_cost_per_token": 0.000001,
                            "output_cost_per_token": 0.000002,
                        },
                    }
                ],
                "router_settings": {"num_retries": 0},
            }
        )
    )
    return path


SIM_API_KEY = "sk-test-0123456789abcdefSECRET"
os.environ["SIM_API_KEY"] = SIM_API_KEY


@pytest.fixture
def sqs(sqs_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    """A fresh queue per test: moto slows down on deep queues, and tests stay independent."""
    return str(
        sqs.create_queue(
            QueueName=f"jobs-{uuid.uuid4().hex[:10]}",
            Attributes={"VisibilityTimeout": "30"},
        )["QueueUrl"]
    )


@pytest.fixture
def worker_env(
    database_url: str, sqs_endpoint: str, queue_url: str, models_file: Path
) -> dict[str, str]:
    """The environment a worker process gets: the contract's variables, fast timings."""
    return {
        **AWS_ENV,
        "DATABASE_URL": database_url,
        "SQS_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "WORKER_MODELS_FILE": str(models_file),
        "WORKER_METRICS_PORT": "0",
        "WORKER_CONCURRENCY": "16",
        "WORKER_FLUSH_INTERVAL_S": "0.05",
        "WORKER_RECEIVE_WAIT_S": "1",
        "WORKER_LOG_FORMAT": "json",
        "SIM_API_KEY": SIM_API_KEY,
    }


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def submit(db: asyncpg.Connection, sqs: Any, queue_url: str) -> Callable[..., Any]:
    """Insert a job row and send its message, as the app does; returns the job id."""

    async def submit(
        request_data: object,
        *,
        body: Callable[[uuid.UUID], str] = lambda job_id: json.dumps({"jobId": str(job_id)}),
        send: bool = True,
    ) -> uuid.UUID:
        job_id: uuid.UUID = await db.fetchval(
            "INSERT INTO ai_streaming_jobs (request_data) VALUES ($1::jsonb) RETURNING id",
            json.dumps(request_data),
        )
        if send:
            await send_message(sqs, queue_url, body(job_id))
        return job_id

    return submit


async def send_message(sqs: Any, queue_url: str, body: str) -> None:
    await asyncio.to_thread(sqs.send_message, QueueUrl=queue_url, MessageBody=body)


StartWorker = Callable[..., Process]


@pytest.fixture
def start_worker(worker_env: dict[str, str], logs_dir: Path) -> Iterator[StartWorker]:
    """Start `streaming-worker run ARGS` as a process with the test's environment (+ overrides)."""
    started: list[Process] = []

    def start(*args: str, **env: str) -> Process:
        log_path = logs_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        process = spawn(worker_command("run", *args), env={**worker_env, **env}, log_path=log_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def row(db: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record:
    record = await db.fetchrow("SELECT * FROM ai_streaming_jobs WHERE id = $1", job_id)
    assert record is not None
    return record


async def deltas_text(db: asyncpg.Connection, job_id: uuid.UUID, attempt: int) -> str:
    """An attempt's deltas concatenated in seq order; asserts the seqs have no gaps."""
    parts = await db.fetch(
        "SELECT seq, content FROM ai_streaming_job_deltas"
        " WHERE job_id = $1 AND attempt = $2 ORDER BY seq",
        job_id,
        attempt,
    )
    assert [part["seq"] for part in parts] == list(range(1, len(parts) + 1)), "seq has gaps"
    return "".join(part["content"] for part in parts)


async def tally(db: asyncpg.Connection, expected: dict[uuid.UUID, str]) -> dict[str, int]:
    """Counted, not assumed: jobs `lost` (not completed, or text missing) and `duplicated`
    (text repeated in the row or in the deltas of the attempt that completed)."""
    lost = duplicated = 0
    for job_id, answer in expected.items():
        record = await row(db, job_id)
        streamed = await deltas_text(db, job_id, record["attempts"])
        texts = (record["partial_content"], streamed)
        if record["status"] != "completed" or any(len(t) < len(answer) for t in texts):
            lost += 1
        elif any(t != answer for t in texts):
            duplicated += 1
    return {"lost": lost, "duplicated": duplicated}


def sim_requests(simulator_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{simulator_url}/_sim/requests", timeout=5) as response:  # noqa: S310
        return list(json.load(response))


def requests_for(simulator_url: str, text: str) -> int:
    """How many chat requests the simulator received whose last message is `text`."""
    return sum(
        1
        for request in sim_requests(simulator_url)
        if request["body"]["messages"][-1]["content"] == text
    )


async def upstream_closed(simulator_url: str, text: str, *, timeout_s: float = 5) -> None:
    """Wait until the simulator saw the client hang up the request whose messages hold `text`."""

    def disconnected() -> bool:
        return any(
            request["outcome"] == "client_disconnected"
            for request in sim_requests(simulator_url)
            if text in json.dumps(request["body"])
        )

    async def closed() -> bool:
        return await asyncio.to_thread(disconnected)

    await eventually(closed, timeout_s=timeout_s, what="the provider stream closed")


async def queue_counts(sqs: Any, queue_url: str) -> dict[str, str]:
    """The queue's attributes as SQS reports them (ApproximateNumberOfMessages, ...)."""
    response = await asyncio.to_thread(
        sqs.get_queue_attributes, QueueUrl=queue_url, AttributeNames=["All"]
    )
    return dict(response["Attributes"])


def chat(text: str, *, model: str = "sim-model", **options: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "options": options}


def _wait_http(url: str, process: Process, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (a local test server)
                return
        except OSError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} did not come up:\n{process.output}") from None
            time.sleep(0.05)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling:
    """`make test` runs the suite in several processes (pytest-xdist), each with its own
    database, moto and simulator. Tests that share something costly run in one process, in
    order: the compose tests (one stack), the other deployment tests (one image), and each
    module of `tests/client` and `tests/simulator` (a module-scoped worker, the demos, a
    simulator). The rest is shared out test by test. Groups go first (the scheduler orders
    them by size). (xdist_group marks are lost under pytest 9.2:
    pytest-dev/pytest-xdist#1386.)"""
    return SharedFixturesTogether(config, log)


class SharedFixturesTogether(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
    def _split_scope(self, nodeid: str) -> str:
        if nodeid.startswith("tests/deploy/test_compose.py"):
            return "tests/deploy: the compose stack"
        if nodeid.startswith("tests/deploy/"):
            return "tests/deploy: the image"
        if nodeid.startswith(("tests/client/", "tests/simulator/")):
            return nodeid.split("::", 1)[0]
        return nodeid
