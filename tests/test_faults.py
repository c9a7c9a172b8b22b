"""Provider faults, shutdown and cancellation, each with the real simulator and worker process."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest
import yaml

from simulator import answer_text
from tests.conftest import (
    SIM_API_KEY,
    StartWorker,
    chat,
    deltas_text,
    queue_counts,
    requests_for,
    row,
    send_message,
    sim_requests,
    tally,
    upstream_closed,
)
from tests.support import eventually


def expected(text: str, tokens: int = 40) -> str:
    return answer_text([{"role": "user", "content": text}], tokens)


async def test_rate_limits_are_retried_and_the_job_completes(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"Busy {uuid.uuid4()} [[sim status=429 times=2 retry_after=0.2]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    record = await row(db, job_id)
    assert (record["status"], record["attempts"]) == ("completed", 1)
    assert record["partial_content"] == expected(text)
    assert requests_for(simulator_url, text) == 3
    assert worker.output.count('"provider_retry"') == 2


async def test_a_retry_after_longer_than_the_backoff_is_waited_out(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    # Two 429s asking for 2 s each: the backoff alone (0.5 s, then 1 s, plus jitter under
    # 0.5 s each) would retry within 2.5 s.
    text = f"Slow down {uuid.uuid4()} [[sim status=429 times=2 retry_after=2]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output
    record = await row(db, job_id)
    assert record["status"] == "completed"
    assert requests_for(simulator_url, text) == 3
    response = json.loads(record["response_data"])
    assert response["duration_ms"] >= 4000


async def test_a_retry_after_past_the_jobs_time_fails_it_rate_limited_at_once(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"Come back later {uuid.uuid4()} [[sim status=429 retry_after=60]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", WORKER_JOB_TIMEOUT_S="20")
    assert await worker.wait() == 1, worker.output
    record = await row(db, job_id)
    assert (record["status"], record["error_code"]) == ("failed", "rate_limited")
    assert requests_for(simulator_url, text) == 1
    response = json.loads(record["response_data"])
    assert response["duration_ms"] < 5000  # not waited into the 20 s job timeout
    assert (response["model"], response["provider"]) == ("openai/sim-model", "openai")


async def test_the_whole_job_timeout_fails_a_job_that_streams_too_long(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Endless {uuid.uuid4()} [[sim tokens=400 tps=20]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", WORKER_JOB_TIMEOUT_S="3")
    assert await worker.wait() == 1, worker.output
    record = await row(db, job_id)
    assert (record["status"], record["error_code"]) == ("failed", "timeout")
    assert "longer than 3 s" in record["error_message"]
    response = json.loads(record["response_data"])
    assert 3000 <= response["duration_ms"] < 6000
    streamed = await deltas_text(db, job_id, 1)
    assert streamed
    assert record["partial_content"] == streamed
    assert expected(text, 400).startswith(streamed)
    assert response["usage"]["completion_tokens"] > 0


async def test_permanent_errors_fail_at_once_with_their_code(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    cases = {
        "status=401": "auth",
        "status=403": "auth",
        "status=404": "unknown_model",
        "status=400 code=context_length_exceeded": "context_window_exceeded",
        "status=400 code=content_filter": "content_filtered",
        "status=422": "provider_error",
    }
    texts = {
        await submit(chat(text := f"Refused {uuid.uuid4()} [[sim {fault}]]")): (text, code)
        for fault, code in cases.items()
    }
    worker = start_worker("--drain")
    assert await worker.wait() == 1, worker.output

    for job_id, (text, code) in texts.items():
        record = await row(db, job_id)
        assert (record["status"], record["error_code"]) == ("failed", code), text
        assert record["error_message"]
        assert SIM_API_KEY not in record["error_message"]
        assert requests_for(simulator_url, text) == 1, f"{code} must not be retried"
        response = json.loads(record["response_data"])
        assert (response["model"], response["provider"]) == ("openai/sim-model", "openai")
        assert response["ttft_ms"] is None
        assert response["attempts"] == 1
    assert SIM_API_KEY not in worker.output


async def test_server_errors_are_retried_then_fail_as_provider_unavailable(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"Down {uuid.uuid4()} [[sim status=503]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", WORKER_PROVIDER_RETRIES="2")
    assert await worker.wait() == 1, worker.output

    record = await row(db, job_id)
    assert (record["status"], record["error_code"]) == ("failed", "provider_unavailable")
    assert requests_for(simulator_url, text) == 3


async def test_a_stream_dropped_after_text_restarts_from_empty_text(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Flaky {uuid.uuid4()} [[sim drop_after=10 times=1 tps=200]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    record = await row(db, job_id)
    assert (record["status"], record["attempts"]) == ("completed", 2)
    assert record["partial_content"] == expected(text)
    assert await deltas_text(db, job_id, 2) == expected(text)
    assert expected(text).startswith(await deltas_text(db, job_id, 1))


async def test_a_stream_that_keeps_breaking_fails_after_the_attempt_limit(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Broken {uuid.uuid4()} [[sim drop_after=5]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", WORKER_MAX_ATTEMPTS="2")
    assert await worker.wait() == 1, worker.output

    record = await row(db, job_id)
    assert (record["status"], record["error_code"]) == ("failed", "provider_unavailable")
    assert record["attempts"] == 2


async def test_a_stalled_stream_is_hung_up_and_restarted(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"Stall {uuid.uuid4()} [[sim stall_after=5 times=1]]"
    job_id = await submit(chat(text))
    worker = start_worker("--drain", WORKER_STALL_TIMEOUT_S="1")
    assert await worker.wait() == 0, worker.output

    record = await row(db, job_id)
    assert (record["status"], record["attempts"]) == ("completed", 2)
    assert record["partial_content"] == expected(text)
    outcomes = [r["outcome"] for r in sim_requests(simulator_url) if text in json.dumps(r["body"])]
    assert outcomes == ["client_disconnected", "completed"]


async def test_no_first_token_in_time_fails_as_timeout(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    job_id = await submit(chat(f"Slow {uuid.uuid4()} [[sim ttft=30]]"))
    worker = start_worker(
        "--drain", WORKER_FIRST_TOKEN_TIMEOUT_S="0.5", WORKER_PROVIDER_RETRIES="1"
    )
    assert await worker.wait() == 1, worker.output
    record = await row(db, job_id)
    assert (record["status"], record["error_code"]) == ("failed", "timeout")


async def test_sigterm_hands_running_jobs_back_and_another_worker_finishes_them(
    db: asyncpg.Connection, submit: Any, sqs: Any, queue_url: str, start_worker: StartWorker
) -> None:
    texts = {}
    for index in range(4):
        text = f"Long {index} {uuid.uuid4()} [[sim tokens=400 tps=20]]"
        texts[await submit(chat(text))] = text
    first = start_worker(WORKER_SHUTDOWN_GRACE_S="1")

    async def all_streaming() -> bool:
        return all([(await row(db, job_id))["status"] == "streaming" for job_id in texts])

    await eventually(all_streaming, what="every job streaming")
    first.popen.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await first.wait(15) == 0, first.output
    assert time.monotonic() - stopped_at < 1 + 5
    assert first.output.count('"job_released"') == 4
    for job_id in texts:
        assert (await row(db, job_id))["status"] == "pending"

    # Handed back at once: the messages are visible again, not after the visibility timeout.
    attributes = await queue_counts(sqs, queue_url)
    assert attributes["ApproximateNumberOfMessages"] == "4"

    second = start_worker("--drain")

    async def all_picked_up() -> bool:
        return all([(await row(db, job_id))["attempts"] == 2 for job_id in texts])

    await eventually(all_picked_up, what="every job restarted by the second worker")
    picked_up_s = time.monotonic() - stopped_at
    assert await second.wait(60) == 0, second.output
    for job_id, text in texts.items():
        record = await row(db, job_id)
        assert (record["status"], record["attempts"]) == ("completed", 2)
        assert record["partial_content"] == expected(text, 400)
    counts = await tally(db, {job_id: expected(text, 400) for job_id, text in texts.items()})
    assert counts == {"lost": 0, "duplicated": 0}
    # The second worker starts cold (2-8 s of imports here, more while the suite's other
    # processes load both cores) and picks them up as soon as it receives.
    assert picked_up_s < 25
    print(
        f"\nfault: SIGTERM: in_flight={len(texts)}, lost={counts['lost']},"
        f" duplicated={counts['duplicated']}, picked_up_after_s={picked_up_s:.1f}"
        " (incl. starting the second worker)"
    )


@pytest.mark.parametrize(
    ("directive", "cancelled_while"),
    [("tokens=400 tps=20", "streaming"), ("ttft=20", "processing")],
    ids=["mid-stream", "before-first-token"],
)
async def test_a_cancelled_job_stops_its_stream_within_two_seconds_and_keeps_the_status(
    db: asyncpg.Connection,
    submit: Any,
    simulator_url: str,
    start_worker: StartWorker,
    directive: str,
    cancelled_while: str,
) -> None:
    text = f"Cancel me {uuid.uuid4()} [[sim {directive}]]"
    job_id = await submit(chat(text))
    # partial_content lags the deltas by up to 30 s: cancelling must bring it level.
    worker = start_worker("--drain", WORKER_CONTENT_REFRESH_S="30")

    async def reached() -> bool:
        return bool((await row(db, job_id))["status"] == cancelled_while)

    await eventually(reached, what=f"job {cancelled_while}")
    await db.execute("UPDATE ai_streaming_jobs SET status = 'cancelled' WHERE id = $1", job_id)
    cancelled_at = time.monotonic()

    await upstream_closed(simulator_url, text)
    assert time.monotonic() - cancelled_at < 2.5
    assert await worker.wait() == 0, worker.output

    record = await row(db, job_id)
    assert record["status"] == "cancelled"
    assert record["completed_at"] is not None
    assert expected(text, 400).startswith(record["partial_content"])
    response = json.loads(record["response_data"])
    assert response["finish_reason"] == "cancelled"
    streamed = await deltas_text(db, job_id, 1)
    # The text so far stays, all of it: partial_content equals the deltas.
    assert record["partial_content"] == streamed
    assert expected(text, 400).startswith(streamed)
    assert response["attempts"] == 1
    if cancelled_while == "streaming":
        assert streamed != ""
        assert response["usage"]["completion_tokens"] > 0
    else:
        assert streamed == ""


async def test_a_job_cancelled_while_pending_is_never_run_and_gets_its_ending(
    db: asyncpg.Connection,
    submit: Any,
    sqs: Any,
    queue_url: str,
    simulator_url: str,
    start_worker: StartWorker,
) -> None:
    text = f"Cancelled early {uuid.uuid4()}"
    job_id = await submit(chat(text), send=False)
    await db.execute("UPDATE ai_streaming_jobs SET status = 'cancelled' WHERE id = $1", job_id)
    await send_message(sqs, queue_url, json.dumps({"jobId": str(job_id)}))
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    record = await row(db, job_id)
    assert record["status"] == "cancelled"
    assert record["completed_at"] is not None
    assert record["attempts"] == 0
    response = json.loads(record["response_data"])
    assert (response["finish_reason"], response["model"], response["attempts"]) == (
        "cancelled",
        None,
        0,
    )
    assert requests_for(simulator_url, text) == 0


async def test_no_secret_reaches_the_logs_or_the_row(
    db: asyncpg.Connection, database_url: str, submit: Any, start_worker: StartWorker
) -> None:
    # The local server trusts 127.0.0.1, so a password in the URL is accepted and ignored.
    password = "pw-" + uuid.uuid4().hex
    with_password = database_url.replace("postgres@", f"postgres:{password}@", 1)
    completed = await submit(chat(f"Fine {uuid.uuid4()}"))
    refused = await submit(chat(f"Refused {uuid.uuid4()} [[sim status=401]]"))

    worker = start_worker("--drain", DATABASE_URL=with_password, WORKER_LOG_LEVEL="debug")
    assert await worker.wait() == 1, worker.output

    assert (await row(db, completed))["status"] == "completed"
    assert (await row(db, refused))["error_code"] == "auth"
    for secret in (password, SIM_API_KEY):
        assert secret not in worker.output
        stored = await db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs"
            " WHERE id = ANY($1::uuid[]) AND (coalesce(error_message, '') LIKE '%' || $2 || '%'"
            " OR coalesce(response_data::text, '') LIKE '%' || $2 || '%')",
            [completed, refused],
            secret,
        )
        assert stored == 0


async def test_a_models_own_timeouts_override_the_workers(
    db: asyncpg.Connection,
    submit: Any,
    simulator_url: str,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    base = {"api_base": f"{simulator_url}/v1", "api_key": "os.environ/SIM_API_KEY"}
    models = tmp_path / "models.yaml"
    entries = {
        "impatient": {"stream_timeout": 1},
        "brief": {"timeout": 2},
        "patient": {"stream_timeout": 8},
    }
    model_list = [
        {"model_name": name, "litellm_params": {"model": "openai/sim-model", **limits, **base}}
        for name, limits in entries.items()
    ]
    models.write_text(yaml.safe_dump({"model_list": model_list}))
    silent = await submit(chat(f"Slow start {uuid.uuid4()} [[sim ttft=4]]", model="impatient"))
    long = await submit(chat(f"Long {uuid.uuid4()} [[sim tokens=200 tps=20]]", model="brief"))
    thinker = f"Thinks first {uuid.uuid4()} [[sim ttft=4]]"
    waited = await submit(chat(thinker, model="patient"))
    # The worker's own limits would have failed `patient` (first token 3 s) and let the
    # others run on: the models file decides for its models.
    worker = start_worker(
        "--drain", WORKER_MODELS_FILE=str(models), WORKER_FIRST_TOKEN_TIMEOUT_S="3"
    )
    assert await worker.wait(timeout_s=90) == 1, worker.output

    first = await row(db, silent)
    assert (first["status"], first["error_code"]) == ("failed", "timeout")
    assert "no first token within 1 s" in first["error_message"]
    second = await row(db, long)
    assert (second["status"], second["error_code"]) == ("failed", "timeout")
    assert "longer than 2 s" in second["error_message"]
    third = await row(db, waited)
    assert third["status"] == "completed"
    assert requests_for(simulator_url, thinker) == 1
