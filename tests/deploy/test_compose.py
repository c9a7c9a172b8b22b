"""The compose stack, brought up with docker-compose (v1) as a user does, on this machine.

Registry images cannot be pulled here, so tests/deploy/compose.stand-ins.yml swaps in
stand-ins built from Debian's packages (scripts/stand-in-images): PostgreSQL 15 for
postgres:16-alpine, moto's SQS server for ElasticMQ, Debian's Prometheus for
prom/prometheus, and the stand-in Python base for the project's image. Grafana is not
started (its image cannot be had here, and no test reads it). Everything else, the
services, their order of health, the networks and names, is docker-compose.yml's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (the tests read rows as the app's clients do)
import boto3
import pytest

from simulator import answer_text
from tests.deploy.docker import Container, drop_replaced, image_id, one_build_at_a_time, script
from tests.support import REPO, eventually, free_port
from tests.test_observability import get

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

FILES = ["-f", "docker-compose.yml", "-f", "tests/deploy/compose.stand-ins.yml"]
QUEUE = "000000000000/streaming-jobs"
IMAGE = "streaming-worker:compose-test"  # the override's tag for the project's image


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    postgres_port: int
    sqs_port: int
    prometheus_port: int

    def compose(self, *args: str, timeout_s: float = 600) -> str:
        result = subprocess.run(
            ["docker-compose", "-p", self.project, *FILES, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr[-5000:]}"
        return result.stdout

    def containers(self, service: str) -> list[Container]:
        return [Container(cid) for cid in self.compose("ps", "-q", service).split()]

    @property
    def client_env(self) -> dict[str, str]:
        """The app side on the host, as README's compose section says."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "SQS_QUEUE_URL": f"http://localhost:{self.sqs_port}/{QUEUE}",
            "AWS_ENDPOINT_URL_SQS": f"http://localhost:{self.sqs_port}",
            "AWS_ACCESS_KEY_ID": "local-placeholder",
            "AWS_SECRET_ACCESS_KEY": "local-placeholder",
            "AWS_REGION": "us-east-1",
        }

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/streaming_worker"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    script("install-tools")  # docker-compose v1, a Docker engine, Prometheus
    stand_ins = dict(
        line.split("=", 1) for line in script("stand-in-images").splitlines() if "=" in line
    )
    ports = {name: free_port() for name in ("POSTGRES", "ELASTICMQ", "PROMETHEUS")}
    env = {
        **os.environ,
        **stand_ins,
        **{f"{name}_HOST_PORT": str(port) for name, port in ports.items()},
        # Two jobs per worker, so that six running jobs need all three replicas.
        "WORKER_CONCURRENCY": "2",
    }
    stack = Stack(
        f"swtest{uuid.uuid4().hex[:8]}",
        env,
        ports["POSTGRES"],
        ports["ELASTICMQ"],
        ports["PROMETHEUS"],
    )
    previous = image_id(IMAGE)
    started = time.monotonic()
    try:
        # Built first: an image left by an earlier run would otherwise be reused as it is,
        # the code in it older than this checkout's. `up` itself waits for each service's
        # dependencies to be healthy (or, for migrate, to have exited 0) before it starts
        # the next.
        with one_build_at_a_time():
            stack.compose("build", timeout_s=900)
        stack.compose("up", "-d", "worker", "prometheus", timeout_s=900)
        up_s = round(time.monotonic() - started, 1)
        print(f"\ncompose_up {json.dumps({'project': stack.project, 'up_s': up_s})}")
        yield stack
    finally:
        # Killed first: the graceful stop was tested; a worker still streaming would take
        # its whole grace to hand its jobs back again.
        stack.compose("kill", timeout_s=120)
        stack.compose("down", "--volumes", "--remove-orphans", timeout_s=180)
        drop_replaced(IMAGE, previous)


@pytest.fixture
async def stack_db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url)
    yield conn
    await conn.close()


def test_stack_is_up_in_order_of_health(stack: Stack) -> None:
    [migrate] = stack.containers("migrate")
    state = migrate.inspect()["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    for service in ("postgres", "elasticmq", "llm-simulator"):
        [container] = stack.containers(service)
        assert container.health() == "healthy", service
    assert "grafana" not in stack.compose("ps", "--services", "--filter", "status=running")


async def test_a_job_submitted_from_the_host_completes(stack: Stack) -> None:
    prompt = f"Hello compose {uuid.uuid4()} [[sim tokens=24 tps=50]]"
    submit = Path(sys.executable).with_name("streaming-worker")
    result = await asyncio.to_thread(
        subprocess.run,
        [str(submit), "submit", "--model", "sim-model", "--follow", prompt],
        env=stack.client_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer_text([{"role": "user", "content": prompt}], 24)
    assert "completed, attempts 1" in result.stderr


async def test_scaled_workers_share_the_queue_and_stop_hands_jobs_back(
    stack: Stack, stack_db: asyncpg.Connection
) -> None:
    stack.compose("up", "-d", "--scale", "worker=3", "worker")
    workers = stack.containers("worker")
    assert len(workers) == 3
    # Prometheus finds each replica through Docker's DNS and scrapes it.
    prometheus = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/query?query="
    query = urllib.parse.quote('count(up{job="streaming-worker"} == 1)')

    async def three_targets() -> bool:
        status, body = await get(prometheus + query)
        result = json.loads(body)["data"]["result"] if status == 200 else []
        return bool(result) and result[0]["value"][1] == "3"

    await eventually(three_targets, timeout_s=60, interval_s=1, what="three scraped workers")

    # Six answers of 45 s: longer than the workers' 25 s grace, so a stop hands them back.
    jobs = []
    for index in range(6):
        text = f"Scaled {index} {uuid.uuid4()} [[sim tokens=900 tps=20]]"
        job_id = await stack_db.fetchval(
            "INSERT INTO ai_streaming_jobs (request_data) VALUES ($1::jsonb) RETURNING id",
            json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": text}]}),
        )
        jobs.append(job_id)
    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://localhost:{stack.sqs_port}",
        region_name="us-east-1",
        aws_access_key_id="local-placeholder",
        aws_secret_access_key="local-placeholder",
    )
    queue_url = f"http://localhost:{stack.sqs_port}/{QUEUE}"
    for job_id in jobs:
        await asyncio.to_thread(
            sqs.send_message, QueueUrl=queue_url, MessageBody=json.dumps({"jobId": str(job_id)})
        )

    async def all_streaming() -> bool:
        streaming = await stack_db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs WHERE id = ANY($1) AND status = 'streaming'",
            jobs,
        )
        return bool(streaming == len(jobs))

    # Two at a time per worker: six streaming at once means all three took jobs.
    await eventually(all_streaming, timeout_s=120, interval_s=0.2, what="six jobs streaming")
    ours = {str(job_id) for job_id in jobs}
    claimed_by = {}
    for container in workers:
        for line in container.logs().splitlines():
            if line.startswith("{") and '"job_claimed"' in line:
                event = json.loads(line)
                if event.get("job_id") in ours:
                    claimed_by[event["job_id"]] = container.name
    assert len(set(claimed_by.values())) == 3, claimed_by

    started = time.monotonic()
    await asyncio.to_thread(stack.compose, "stop", "worker")
    stop_s = time.monotonic() - started
    for container in workers:
        state = container.inspect()["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), container.logs()[-3000:]
    assert stop_s < 30, f"docker-compose stop took {stop_s:.1f} s (stop_grace_period 30 s)"
    print(f"\ncompose_stop {json.dumps({'workers': 3, 'stop_s': round(stop_s, 1)})}")
    rows = await stack_db.fetch(
        "SELECT status, attempts FROM ai_streaming_jobs WHERE id = ANY($1)", jobs
    )
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 1)] * len(jobs)
    counts: dict[str, Any] = (
        await asyncio.to_thread(
            sqs.get_queue_attributes, QueueUrl=queue_url, AttributeNames=["All"]
        )
    )["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == str(len(jobs))

    # Started again, the workers take the handed-back jobs up from empty text.
    stack.compose("start", "worker")

    async def restarted() -> bool:
        again = await stack_db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs WHERE id = ANY($1)"
            " AND status = 'streaming' AND attempts = 2",
            jobs,
        )
        return bool(again == len(jobs))

    await eventually(restarted, timeout_s=120, interval_s=0.2, what="jobs restarted")
