"""The worker end to end: SQS message → claim → LiteLLM over HTTP → rows and deltas."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest

from simulator import answer_text
from tests.conftest import (
    StartWorker,
    chat,
    deltas_text,
    queue_counts,
    requests_for,
    row,
    send_message,
    sim_requests,
)


async def test_forty_jobs_complete_byte_exact_at_concurrency_16(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    jobs = {}
    for index in range(40):
        tokens = 10 + index
        # Half the answers are cut by max_tokens, half end on their own; every fifth is sent
        # in writes split inside a multi-byte character.
        split = " split=1" if index % 5 == 0 else ""
        if index % 2:
            text = f"Question {index} {uuid.uuid4()} [[sim tokens={tokens}{split}]]"
            request = chat(text)
        else:
            text = f"Question {index} {uuid.uuid4()} [[sim tokens=100{split}]]"
            request = chat(text, max_tokens=tokens)
        jobs[await submit(request)] = (text, tokens, "stop" if index % 2 else "length")

    worker = start_worker("--drain", WORKER_CONCURRENCY="16")
    assert await worker.wait(120) == 0, worker.output

    for job_id, (text, tokens, finish_reason) in jobs.items():
        record = await row(db, job_id)
        expected = answer_text([{"role": "user", "content": text}], tokens)
        assert record["status"] == "completed", record["error_message"]
        assert record["partial_content"] == expected
        assert record["attempts"] == 1
        assert await deltas_text(db, job_id, 1) == expected
        response = json.loads(record["response_data"])
        assert response["usage"]["completion_tokens"] == tokens
        assert response["finish_reason"] == finish_reason
        assert response["provider"] == "openai"
        assert response["model"] == "sim-model"
        assert response["cost_usd"] == pytest.approx(
            response["usage"]["prompt_tokens"] * 1e-6 + tokens * 2e-6
        )
        # The conftest simulator sends its first token 10 ms after the request.
        assert 10 <= response["ttft_ms"] <= response["duration_ms"]
        assert response["attempts"] == 1
        assert response["message"] == {"role": "assistant", "content": expected}
        assert response["parts"] == [{"type": "text", "text": expected}]
        assert record["completed_at"] is not None
        assert record["started_at"] <= record["completed_at"]
    answers = "".join(
        answer_text([{"role": "user", "content": text}], tokens)
        for text, tokens, _ in jobs.values()
    )
    assert any(ord(ch) > 0xFFFF for ch in answers), "the answers should include 4-byte characters"


async def test_never_more_jobs_at_once_than_the_concurrency(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    job_ids = [
        await submit(chat(f"Bounded {i} {uuid.uuid4()} [[sim tokens=30 tps=20]]")) for i in range(9)
    ]
    worker = start_worker("--drain", WORKER_CONCURRENCY="3")
    most = 0
    while worker.popen.poll() is None:
        running = await db.fetchval(
            "SELECT count(*) FROM ai_streaming_jobs"
            " WHERE id = ANY($1::uuid[]) AND status IN ('processing', 'streaming')",
            job_ids,
        )
        most = max(most, running)
        await asyncio.sleep(0.05)
    assert await worker.wait() == 0, worker.output
    assert most == 3  # reached, never passed (9 jobs of 1.5 s would overlap otherwise)


async def test_one_statement_per_flush_carries_every_running_job(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    # 20 jobs streaming together for ~3 s, flushed every 50 ms: a statement per job per
    # flush would be ~1,200; one per flush for all of them is ~60, plus claims and deletes.
    job_ids = [
        await submit(chat(f"Together {i} {uuid.uuid4()} [[sim tokens=60 tps=20]]"))
        for i in range(20)
    ]
    before = await _transactions(db)
    worker = start_worker("--drain", WORKER_CONCURRENCY="20", WORKER_FLUSH_INTERVAL_S="0.05")
    assert await worker.wait() == 0, worker.output  # its sessions' statistics flush on exit
    statements = await _transactions(db) - before
    deltas = await db.fetchval(
        "SELECT count(*) FROM ai_streaming_job_deltas WHERE job_id = ANY($1::uuid[])", job_ids
    )
    print(f"\nflush: jobs=20, deltas={deltas}, statements={statements}")
    assert deltas >= 20 * 10  # each job wrote many deltas...
    assert statements < 250, statements  # ...in far fewer statements than deltas


async def _transactions(db: asyncpg.Connection) -> int:
    """Transactions in this database so far (each statement the worker sends is one)."""
    await db.execute("SELECT pg_stat_force_next_flush()")
    value: int = await db.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    return value


async def test_polling_client_sees_only_growing_prefixes_and_statuses_in_order(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Tell a long story {uuid.uuid4()} [[sim tokens=60 tps=40]]"
    job_id = await submit(chat(text))
    expected = answer_text([{"role": "user", "content": text}], 60)
    worker = start_worker("--drain", WORKER_CONTENT_REFRESH_S="0")

    seen: list[tuple[str, str]] = []
    while worker.popen.poll() is None or not seen or seen[-1][0] != "completed":
        record = await row(db, job_id)
        seen.append((record["status"], record["partial_content"]))
        if record["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    assert await worker.wait() == 0, worker.output

    statuses = [status for status, _ in seen]
    order = ["pending", "processing", "streaming", "completed"]
    assert statuses == sorted(statuses, key=order.index), "status went backwards"
    assert "streaming" in statuses
    lengths = [len(content) for _, content in seen]
    assert lengths == sorted(lengths), "partial_content shrank"
    assert all(expected.startswith(content) for _, content in seen)
    assert len({content for _, content in seen}) > 5, "the answer should be seen growing"
    assert seen[-1] == ("completed", expected)


async def test_each_message_delivered_twice_calls_the_provider_once_per_job(
    db: asyncpg.Connection,
    submit: Any,
    sqs: Any,
    queue_url: str,
    simulator_url: str,
    start_worker: StartWorker,
) -> None:
    texts = {}
    for index in range(6):
        text = f"Duplicate me {index} {uuid.uuid4()} [[sim tps=100]]"
        job_id = await submit(chat(text))
        await send_message(sqs, queue_url, json.dumps({"jobId": str(job_id)}))
        texts[job_id] = text

    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    for job_id, text in texts.items():
        assert (await row(db, job_id))["status"] == "completed"
        assert requests_for(simulator_url, text) == 1
    attributes = await queue_counts(sqs, queue_url)
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_legacy_bare_uuid_bodies_and_vercel_parts_messages(
    db: asyncpg.Connection, submit: Any, start_worker: StartWorker
) -> None:
    text = f"Legacy {uuid.uuid4()}"
    legacy_request = {
        "provider": "openai",
        "modelId": "sim-model",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
    }
    bare = await submit(legacy_request, body=str)
    quoted = await submit(chat(text + " quoted"), body=lambda job_id: json.dumps(str(job_id)))

    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    expected = answer_text([{"role": "user", "content": text}], 40)
    assert (await row(db, bare))["partial_content"] == expected
    assert (await row(db, quoted))["status"] == "completed"


async def test_garbage_bodies_are_removed_and_unknown_ids_left_for_redelivery(
    db: asyncpg.Connection, submit: Any, sqs: Any, queue_url: str, start_worker: StartWorker
) -> None:
    for body in ("not json {", json.dumps({"job": "x"}), json.dumps({"jobId": 42}), "[]", ""):
        await send_message(sqs, queue_url, body or " ")
    await send_message(sqs, queue_url, json.dumps({"jobId": str(uuid.uuid4())}))
    good = await submit(chat(f"Still served {uuid.uuid4()}"))

    worker = start_worker("--drain")
    assert await worker.wait() == 1, worker.output  # poison and a missing row are not success

    assert (await row(db, good))["status"] == "completed"
    assert worker.output.count('"poison_message"') == 5
    assert '"job_row_missing"' in worker.output
    attributes = await queue_counts(sqs, queue_url)
    # Only the unknown id is left, invisible until its retry; the garbage is gone for good.
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


async def test_invalid_request_data_fails_without_calling_the_provider(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    marker = f"never asked {uuid.uuid4()}"
    cases = {
        "no messages": ({"model": "sim-model", "messages": []}, "messages"),
        "unknown role": (
            {"model": "sim-model", "messages": [{"role": "robot", "content": marker}]},
            "role",
        ),
        "wrong type": ({"model": "sim-model", "messages": "hello"}, "messages"),
        "bad option": (chat(marker, temperature="hot"), "temperature"),
        "no model": ({"messages": [{"role": "user", "content": marker}]}, "model"),
    }
    job_ids = {name: await submit(request) for name, (request, _) in cases.items()}
    unknown_model = await submit(chat(marker, model="no-such-model"))

    worker = start_worker("--drain")
    assert await worker.wait() == 1, worker.output

    for name, (_, mentioned) in cases.items():
        record = await row(db, job_ids[name])
        assert (record["status"], record["error_code"]) == ("failed", "invalid_request"), name
        assert mentioned in record["error_message"], (name, record["error_message"])
        assert "Traceback" not in record["error_message"]
        assert record["completed_at"] is not None
    record = await row(db, unknown_model)
    assert (record["status"], record["error_code"]) == ("failed", "unknown_model")
    assert "no-such-model" in record["error_message"]
    assert requests_for(simulator_url, marker) == 0


async def test_connection_options_in_a_job_are_ignored(
    db: asyncpg.Connection, submit: Any, simulator_url: str, start_worker: StartWorker
) -> None:
    text = f"Where do I go {uuid.uuid4()}"
    job_id = await submit(
        chat(
            text,
            temperature=0.3,
            api_base="http://127.0.0.2:9/v1",
            api_key="sk-job-supplied-key-0000",
            extra_headers={"X-Evil": "1"},
        )
    )
    worker = start_worker("--drain")
    assert await worker.wait() == 0, worker.output

    assert (await row(db, job_id))["status"] == "completed"
    [request] = [r for r in sim_requests(simulator_url) if text in json.dumps(r["body"])]
    assert request["body"]["temperature"] == 0.3
    assert request["headers"]["Authorization"] == "Bearer sk-test-0123456789abcdefSECRET"
    assert "X-Evil" not in request["headers"]
    assert '"options_ignored"' in worker.output
