"""Metrics, health endpoints and logs, read after real workloads as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest
from prometheus_client.parser import text_string_to_metric_families  # noqa: TID251

from tests.conftest import StartWorker, chat, queue_counts, row
from tests.support import REPO, Process, eventually

PROMTOOL = shutil.which("promtool") or str(REPO / ".tools/bin/promtool")


def promtool() -> str:
    if not Path(PROMTOOL).exists():
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run runs scripts/install-promtool")
        pytest.skip("promtool is not installed (scripts/install-promtool gets it)")
    return PROMTOOL


def metrics_port(worker: Process) -> int:
    for line in worker.output.splitlines():
        if '"worker_started"' in line:
            return int(json.loads(line)["metrics_port"])
    raise AssertionError(f"no worker_started event:\n{worker.output}")


async def get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (local)
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    return await asyncio.to_thread(fetch)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


async def started(worker: Process) -> int:
    async def port() -> int | None:
        try:
            return metrics_port(worker)
        except AssertionError:
            return None

    return await eventually(port, what="worker started")


async def test_metrics_after_a_known_workload(
    db: asyncpg.Connection, submit: Any, sqs: Any, queue_url: str, start_worker: StartWorker
) -> None:
    completed = [await submit(chat(f"Count me {i} {uuid.uuid4()}")) for i in range(7)]
    invalid = [await submit({"model": "sim-model", "messages": []}) for _ in range(2)]
    refused = await submit(chat(f"No entry {uuid.uuid4()} [[sim status=401]]"))
    limited = await submit(chat(f"Busy {uuid.uuid4()} [[sim status=429 times=1 retry_after=0.1]]"))
    for _ in range(2):  # ids with no row yet: left in flight for redelivery
        await asyncio.to_thread(
            sqs.send_message,
            QueueUrl=queue_url,
            MessageBody=json.dumps({"jobId": str(uuid.uuid4())}),
        )
    await asyncio.to_thread(sqs.send_message, QueueUrl=queue_url, MessageBody="garbage")
    worker = start_worker(WORKER_QUEUE_DEPTH_INTERVAL_S="0.3")
    url = f"http://127.0.0.1:{await started(worker)}/metrics"

    async def all_ended() -> bool:
        statuses = [(await row(db, j))["status"] for j in [*completed, *invalid, refused, limited]]
        return all(s in ("completed", "failed") for s in statuses)

    await eventually(all_ended, what="every job ended")

    async def depth_settled() -> dict[Any, float] | None:
        status, text = await get(url)
        parsed = samples(text)
        in_flight = value(
            parsed, "streaming_worker_queue_messages", queue="jobs", state="in_flight"
        )
        return parsed if status == 200 and in_flight == 2 else None

    parsed = await eventually(depth_settled, what="queue depth exported")
    server = await queue_counts(sqs, queue_url)
    assert server["ApproximateNumberOfMessagesNotVisible"] == "2"
    assert value(parsed, "streaming_worker_queue_messages", queue="jobs", state="visible") == 0

    finished = "streaming_worker_jobs_finished_total"
    ok = {"outcome": "completed", "model": "sim-model", "provider": "openai", "error_code": ""}
    assert value(parsed, finished, **ok) == 8, [k for k in parsed if k[0] == finished]
    assert (
        value(
            parsed,
            finished,
            outcome="failed",
            model="none",
            provider="none",
            error_code="invalid_request",
        )
        == 2
    )
    assert (
        value(
            parsed,
            finished,
            outcome="failed",
            model="sim-model",
            provider="openai",
            error_code="auth",
        )
        == 1
    )
    assert value(parsed, "streaming_worker_job_duration_seconds_count", outcome="completed") == 8
    assert value(parsed, "streaming_worker_job_duration_seconds_count", outcome="failed") == 3
    assert (
        value(
            parsed,
            "streaming_worker_time_to_first_token_seconds_count",
            model="sim-model",
            provider="openai",
        )
        == 8
    )
    assert (
        value(
            parsed,
            "streaming_worker_provider_stream_duration_seconds_count",
            model="sim-model",
            provider="openai",
        )
        == 8
    )
    retried = value(
        parsed,
        "streaming_worker_provider_retries_total",
        model="sim-model",
        error_code="rate_limited",
    )
    assert retried == 1, "one 429 is retried once and spills onto no other job"
    assert (
        value(parsed, "streaming_worker_tokens_total", model="sim-model", kind="completion")
        == 8 * 40
    )
    assert value(parsed, "streaming_worker_cost_usd_total", model="sim-model") > 0
    assert value(parsed, "streaming_worker_queue_wait_seconds_count") == 11
    assert (
        value(
            parsed,
            "streaming_worker_poison_messages_total",
            reason="body is neither JSON nor a job id",
        )
        == 1
    )
    assert value(parsed, "streaming_worker_messages_deferred_total", reason="no_row") >= 2
    assert value(parsed, "streaming_worker_jobs_in_flight") == 0
    assert value(parsed, "streaming_worker_concurrency_limit") == 16
    assert value(parsed, "streaming_worker_db_flush_rows_count") > 0
    assert value(parsed, "streaming_worker_visibility_lag_seconds_count") > 0
    assert any(name == "streaming_worker_build_info" for name, _ in parsed)

    _, text = await get(url)
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    worker.popen.terminate()
    assert await worker.wait() == 0, worker.output


async def test_healthz_turns_red_when_the_receive_loop_makes_no_progress(
    start_worker: StartWorker,
) -> None:
    # An SQS endpoint that accepts connections and never answers: receives hang.
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    black_hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    worker = start_worker(
        AWS_ENDPOINT_URL_SQS=f"http://127.0.0.1:{port}",
        WORKER_RECEIVE_WAIT_S="1",
        WORKER_HEALTH_STALL_S="2",
    )
    health = f"http://127.0.0.1:{await started(worker)}/healthz"
    assert (await get(health))[0] == 200

    async def red() -> bool:
        return (await get(health))[0] == 503

    await eventually(red, timeout_s=15, what="/healthz 503")
    worker.popen.send_signal(signal.SIGTERM)
    assert await worker.wait(15) == 0, worker.output
    black_hole.close()
    for writer in held:
        writer.close()
        await writer.wait_closed()
    await black_hole.wait_closed()


async def test_readyz_says_not_ready_from_the_start_of_shutdown(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    job_id = await submit(chat(f"Finish me {uuid.uuid4()} [[sim tokens=80 tps=40]]"))
    worker = start_worker(WORKER_SHUTDOWN_GRACE_S="10")
    base = f"http://127.0.0.1:{await started(worker)}"
    assert (await get(base + "/readyz"))[0] == 200

    async def streaming() -> bool:
        return bool((await row(db, job_id))["status"] == "streaming")

    await eventually(streaming, what="job streaming")
    worker.popen.send_signal(signal.SIGTERM)

    async def not_ready() -> bool:
        return (await get(base + "/readyz"))[0] == 503

    await eventually(not_ready, timeout_s=5, what="/readyz 503 during the grace period")
    assert (await get(base + "/healthz"))[0] == 200
    assert await worker.wait(20) == 0, worker.output
    # Within the grace period the running job was allowed to finish.
    assert (await row(db, job_id))["status"] == "completed"


async def test_logs_are_json_events_with_the_job_bound_and_no_prompt_or_answer(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    marker = f"private-{uuid.uuid4()}"
    job_id = await submit(chat(f"My secret question {marker}"))
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    events = [json.loads(line) for line in worker.output.splitlines() if line.startswith("{")]
    assert len(events) == len(worker.output.splitlines()), "every line is one JSON event"
    mine = {e["event"]: e for e in events if e.get("job_id") == str(job_id)}
    assert {"job_claimed", "first_token", "job_completed"} <= set(mine)
    completed = mine["job_completed"]
    for key in ("message_id", "receive_count", "attempt", "model", "provider", "timestamp"):
        assert key in completed, key
    assert (completed["model"], completed["provider"], completed["attempt"]) == (
        "sim-model",
        "openai",
        1,
    )
    assert any(e["event"] == "shutdown_complete" for e in events)
    answer = (await row(db, job_id))["partial_content"]
    assert marker not in worker.output
    assert answer not in worker.output
