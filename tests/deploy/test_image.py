"""The image, run as ECS and `docker run` run it: containers on the host network against the
host's PostgreSQL, moto's SQS server and the LLM simulator.

Secrets reach the containers the way they stay out of `docker inspect`: the database URL
(with a password, for a role of its own) in a read-only `.env` mounted at the working
directory, and the provider key in a read-only models file. The tests then look for both in
`docker inspect` and in the logs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (the tests read rows as the app's clients do)
import pytest
import yaml

from simulator import answer_text
from tests.conftest import ADMIN_DSN, AWS_ENV, chat, deltas_text, send_message, sim_requests
from tests.deploy.docker import Container, Containers, docker, inspect
from tests.support import eventually, free_port

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

# The image's read-only root filesystem needs one writable place: Python's tempfile (LiteLLM
# and aiohttp use it at start) finds no usable directory otherwise.
HARDENED = ["--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid,size=64m"]  # noqa: S108
FAST_HEALTH = [
    "--health-interval=1s",
    "--health-timeout=3s",
    "--health-retries=2",
    "--health-start-period=60s",
]


@dataclass
class Secrets:
    """What must never show: the database password and the provider key."""

    password: str
    provider_key: str
    env_file: Path
    models_file: Path
    dsn: str

    def mounts(self) -> list[tuple[str, str]]:
        return [
            (str(self.env_file), "/app/.env"),
            (str(self.models_file), "/app/config/test-models.yaml"),
        ]

    def assert_absent(self, *texts: str) -> None:
        for text in texts:
            assert self.password not in text
            assert self.provider_key not in text


@pytest.fixture(scope="session")
async def secrets(
    tmp_path_factory: pytest.TempPathFactory, simulator_url: str
) -> AsyncIterator[Secrets]:
    """A role with a password and a database it owns; the URL and the key in files only."""
    suffix = uuid.uuid4().hex[:10]
    role, database = f"sw_img_{suffix}", f"sw_img_{suffix}"
    password = f"pw-{uuid.uuid4().hex}"
    provider_key = f"sk-img-{uuid.uuid4().hex}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE "{database}" OWNER {role}')
    finally:
        await admin.close()
    host = ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    dsn = f"postgresql://{role}:{password}@{host}/{database}"
    directory = tmp_path_factory.mktemp("image-secrets")
    env_file = directory / "worker.env"
    env_file.write_text(f"DATABASE_URL={dsn}\n")
    models_file = directory / "models.yaml"
    models_file.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "sim-model",
                        "litellm_params": {
                            "model": "openai/sim-model",
                            "api_base": f"{simulator_url}/v1",
                            "api_key": provider_key,
                        },
                    }
                ],
                "router_settings": {"num_retries": 0},
            }
        )
    )
    for path in (env_file, models_file):
        path.chmod(0o644)  # the image's user (uid 10001) reads them through the mount
    yield Secrets(password, provider_key, env_file, models_file, dsn)
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def migrated(image: str, secrets: Secrets) -> str:
    """`streaming-worker migrate` from the image, twice (idempotent), read-only and non-root."""
    for _ in range(2):
        name = f"sw-test-migrate-{uuid.uuid4().hex[:8]}"
        try:
            docker(
                "run",
                "--name",
                name,
                "--network",
                "host",
                *HARDENED,
                *[f"--volume={src}:{dst}:ro" for src, dst in secrets.mounts()],
                image,
                "migrate",
                timeout_s=180,
            )
            secrets.assert_absent(Container(name).logs(), json.dumps(inspect(name)))
        finally:
            docker("rm", "--force", name, check=False)
    return secrets.dsn


@pytest.fixture
async def image_db(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated)
    yield conn
    await conn.close()


def worker_env(queue_url: str, sqs_endpoint: str, **extra: str) -> dict[str, str]:
    """The non-secret settings, as a task definition's `environment` holds them."""
    return {
        **AWS_ENV,
        "SQS_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "WORKER_MODELS_FILE": "/app/config/test-models.yaml",
        "WORKER_METRICS_PORT": str(free_port()),
        "WORKER_FLUSH_INTERVAL_S": "0.05",
        "WORKER_RECEIVE_WAIT_S": "1",
        **extra,
    }


async def submit(db: asyncpg.Connection, sqs: Any, queue_url: str, text: str) -> uuid.UUID:
    job_id: uuid.UUID = await db.fetchval(
        "INSERT INTO ai_streaming_jobs (request_data) VALUES ($1::jsonb) RETURNING id",
        json.dumps(chat(text)),
    )
    await send_message(sqs, queue_url, json.dumps({"jobId": str(job_id)}))
    return job_id


async def exited(container: Container, timeout_s: float) -> dict[str, Any]:
    async def state() -> dict[str, Any] | None:
        current: dict[str, Any] = (await asyncio.to_thread(container.inspect))["State"]
        return None if current["Running"] else current

    return await eventually(state, timeout_s=timeout_s, interval_s=0.1, what="container exit")


def test_image_ships_the_real_package_and_nothing_else(image: str) -> None:
    config = inspect(image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["streaming-worker"]
    assert config["Cmd"] == ["run"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    probe = """
import importlib.util, json, os, shutil, sys, worker, worker.cli
venv = sys.prefix
print(json.dumps({
    "version": worker.__version__,
    "worker_from": worker.__file__,
    "uid": os.getuid(),
    "compilers": [c for c in ("gcc", "cc", "g++", "clang", "make") if shutil.which(c)],
    "venv_pip": os.path.exists(os.path.join(venv, "bin", "pip")),
    "modules": [m for m in ("tests", "bench", "pip", "setuptools") if importlib.util.find_spec(m)],
    "pip_caches": [p for p in ("/root/.cache/pip", "/app/.cache", "/tmp/pip") if os.path.exists(p)],
    "app": sorted(os.listdir("/app")),
}))
"""
    out = docker("run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", probe)
    found = json.loads(out.splitlines()[-1])
    assert found["version"] == "0.1.0"  # the installed package, not a stub or a 0.0.0 fallback
    assert found["worker_from"].startswith("/opt/venv/lib/")
    assert found["uid"] == 10001
    assert found["compilers"] == []
    assert found["venv_pip"] is False
    assert found["modules"] == []
    assert found["pip_caches"] == []
    assert found["app"] == ["config"]
    help_text = docker("run", "--rm", "--network", "host", image, "run", "--help")
    assert "--drain" in help_text


async def test_migrate_from_the_image_creates_the_schema(image_db: asyncpg.Connection) -> None:
    tables = {
        row["tablename"]
        for row in await image_db.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"ai_streaming_jobs", "ai_streaming_job_deltas"} <= tables


async def test_two_containers_drain_jobs_and_one_stops_mid_stream(
    containers: Containers,
    secrets: Secrets,
    image_db: asyncpg.Connection,
    sqs: Any,
    sqs_endpoint: str,
    queue_url: str,
    simulator_url: str,
) -> None:
    grace_s = 3
    # 16 answers of 8 s, four at a time per worker: both workers are busy when one is stopped,
    # and its jobs cannot finish within the grace, so they are handed back to the other.
    texts = [f"Container job {i} {uuid.uuid4()} [[sim tokens=160 tps=20]]" for i in range(16)]
    jobs = {await submit(image_db, sqs, queue_url, text): text for text in texts}
    env = {"WORKER_CONCURRENCY": "4", "WORKER_SHUTDOWN_GRACE_S": str(grace_s)}
    options = [*HARDENED, *FAST_HEALTH, "--stop-timeout", "20"]
    first, second = (
        containers.run(
            "run",
            env=worker_env(queue_url, sqs_endpoint, **env),
            mounts=secrets.mounts(),
            options=options,
        )
        for _ in range(2)
    )
    await asyncio.gather(
        first.wait_for("health", "healthy", timeout_s=90),
        second.wait_for("health", "healthy", timeout_s=90),
    )

    async def both_busy() -> bool:
        streaming = await image_db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs WHERE id = ANY($1) AND status = 'streaming'",
            list(jobs),
        )
        return bool(streaming >= 7)

    await eventually(both_busy, timeout_s=60, what="both workers streaming")
    # The read-only root filesystem and the user, seen from inside the running container.
    denied = docker(
        "exec",
        first.name,
        "python",
        "-c",
        "import os\ntry:\n open('/app/x', 'w')\nexcept OSError as e:\n print(os.getuid(), e.errno)",
    )
    assert denied.split() == ["10001", "30"]  # EROFS

    stop_started = time.monotonic()
    stop = await asyncio.to_thread(docker, "stop", first.name, timeout_s=60)
    stop_s = time.monotonic() - stop_started
    assert stop.strip() == first.name
    state = first.inspect()["State"]
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), first.logs()[-3000:]
    assert stop_s < grace_s + 8, f"docker stop took {stop_s:.1f} s"
    print(f"\ncontainer_stopped {json.dumps({'grace_s': grace_s, 'stop_s': round(stop_s, 1)})}")

    async def all_completed() -> bool:
        done = await image_db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs WHERE id = ANY($1) AND status = 'completed'",
            list(jobs),
        )
        return bool(done == len(jobs))

    await eventually(all_completed, timeout_s=120, interval_s=0.2, what="every job completed")
    restarted = 0
    for job_id, text in jobs.items():
        record = await image_db.fetchrow("SELECT * FROM ai_streaming_jobs WHERE id = $1", job_id)
        assert record is not None
        expected = answer_text([{"role": "user", "content": text}], 160)
        assert record["partial_content"] == expected
        assert await deltas_text(image_db, job_id, record["attempts"]) == expected
        restarted += record["attempts"] > 1
    assert restarted >= 1, "the stopped worker's jobs should have been handed back"
    assert second.running()

    second_stop = await asyncio.to_thread(docker, "stop", second.name, timeout_s=60)
    assert second_stop.strip() == second.name
    assert second.inspect()["State"]["ExitCode"] == 0
    # The provider got the key (so it was used), and it shows nowhere an operator looks.
    with_key = [
        request
        for request in await asyncio.to_thread(sim_requests_for, simulator_url, texts)
        if request["headers"].get("Authorization") == f"Bearer {secrets.provider_key}"
    ]
    assert len(with_key) >= len(jobs)
    for container in (first, second):
        secrets.assert_absent(container.logs(), json.dumps(container.inspect()))


def sim_requests_for(simulator_url: str, texts: list[str]) -> list[dict[str, Any]]:
    wanted = set(texts)
    return [
        request
        for request in sim_requests(simulator_url)
        if request["body"]["messages"][-1]["content"] in wanted
    ]


async def test_healthcheck_turns_unhealthy_when_sqs_is_a_black_hole(
    containers: Containers, secrets: Secrets, migrated: str, queue_url: str
) -> None:
    # An SQS endpoint that accepts connections and never answers: receives hang.
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    black_hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    try:
        worker = containers.run(
            "run",
            env=worker_env(queue_url, f"http://127.0.0.1:{port}", WORKER_HEALTH_STALL_S="3"),
            mounts=secrets.mounts(),
            options=[*HARDENED, *FAST_HEALTH],
        )
        await worker.wait_for("health", "healthy", timeout_s=90)
        await worker.wait_for("health", "unhealthy", timeout_s=60)
        log = worker.inspect()["State"]["Health"]["Log"]
        assert log[-1]["ExitCode"] != 0
        assert worker.running(), "unhealthy is the orchestrator's cue; the worker keeps running"
    finally:
        black_hole.close()
        for writer in held:
            writer.close()
        await black_hole.wait_closed()
