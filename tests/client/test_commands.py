"""The app-side CLI (`submit`, `--follow`, `status`, `cancel`) against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)

from simulator import answer_text
from tests.client.conftest import CLI_TIMEOUT_S, Cli
from tests.conftest import row
from tests.support import REPO, eventually, worker_command


async def test_submit_writes_a_pending_row_and_sends_its_message(
    cli: Cli, db: asyncpg.Connection, sqs: Any, queue_url: str
) -> None:
    result = await cli(
        "submit",
        "--model",
        "sim-model",
        "--system",
        "Be brief.",
        "Hello there",
        SQS_QUEUE_URL=queue_url,  # nobody reads this one
    )

    assert result.returncode == 0, result.stderr
    job_id = uuid.UUID(result.stdout.strip())
    record = await row(db, job_id)
    assert record["status"] == "pending"
    assert json.loads(record["request_data"]) == {
        "model": "sim-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        "options": {},
    }
    messages = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10
    )
    assert [json.loads(m["Body"]) for m in messages["Messages"]] == [{"jobId": str(job_id)}]


async def test_submit_follow_prints_the_answer_as_it_grows(
    served_env: dict[str, str], db: asyncpg.Connection
) -> None:
    process = await asyncio.create_subprocess_exec(
        *worker_command(
            "submit",
            "--model",
            "sim-model",
            "--follow",
            f"grow {uuid.uuid4()} [[sim tokens=12 tps=12]]",
        ),
        env={**os.environ, **served_env},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first_line = await asyncio.wait_for(process.stderr.readline(), CLI_TIMEOUT_S)
    job_id = uuid.UUID(first_line.decode().split()[-1])

    # The first text is on the terminal while the job is still streaming.
    first_bytes = await asyncio.wait_for(process.stdout.read(1), CLI_TIMEOUT_S)
    assert (await row(db, job_id))["status"] == "streaming"

    rest = await asyncio.wait_for(process.stdout.read(), CLI_TIMEOUT_S)
    stderr = await process.stderr.read()
    assert await process.wait() == 0, stderr.decode()
    record = await row(db, job_id)
    assert record["status"] == "completed"
    assert (first_bytes + rest).decode() == record["partial_content"]
    assert "completed" in stderr.decode()


async def test_follow_starts_over_when_the_attempt_restarts(
    cli: Cli, db: asyncpg.Connection
) -> None:
    prompt = f"restart {uuid.uuid4()} [[sim drop_after=5 times=1 tokens=12 tps=10]]"
    result = await cli("submit", "--model", "sim-model", "--follow", prompt)

    assert result.returncode == 0, result.stderr
    job_id = uuid.UUID(result.stderr.split()[1])
    record = await row(db, job_id)
    assert (record["status"], record["attempts"]) == ("completed", 2)
    assert "the answer started over (attempt 2)" in result.stderr
    # What stays on screen after the restart notice is exactly the final answer.
    assert result.stdout.rsplit("\n", 1)[-1] == record["partial_content"]


async def test_follow_exits_one_with_the_error_when_the_job_fails(cli: Cli) -> None:
    result = await cli("submit", "--model", "not-in-the-models-file", "--follow", "hi")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "failed" in result.stderr
    assert "unknown_model" in result.stderr


async def test_status_shows_status_attempts_error_and_usage(cli: Cli) -> None:
    done = await cli("submit", "--model", "sim-model", "--follow", f"usage {uuid.uuid4()}")
    failed = await cli("submit", "--model", "not-listed", "--follow", "x")
    done_id, failed_id = done.stderr.split()[1], failed.stderr.split()[1]

    shown = await cli("status", done_id)
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(maxsplit=1) for line in shown.stdout.splitlines() if " " in line)
    assert fields["status"] == "completed"
    assert fields["attempts"] == "1"
    assert fields["error"] == "-"
    assert "+ 40 completion =" in fields["usage"]

    as_json = json.loads((await cli("status", "--json", done_id)).stdout)
    assert as_json["status"] == "completed"
    assert as_json["response_data"]["usage"]["completion_tokens"] == 40
    assert as_json["content_chars"] > 0

    failed_view = json.loads((await cli("status", "--json", failed_id)).stdout)
    assert (failed_view["status"], failed_view["error_code"]) == ("failed", "unknown_model")
    assert "unknown_model:" in (await cli("status", failed_id)).stdout

    unknown = await cli("status", str(uuid.uuid4()))
    assert unknown.returncode == 2
    assert "no job" in unknown.stderr


async def test_cancel_sets_cancelled_only_before_the_job_ends(
    cli: Cli, db: asyncpg.Connection, queue_url: str
) -> None:
    waiting = await cli("submit", "--model", "sim-model", "waits", SQS_QUEUE_URL=queue_url)
    pending_id = waiting.stdout.strip()

    first = await cli("cancel", pending_id)
    assert first.returncode == 0, first.stderr
    record = await row(db, uuid.UUID(pending_id))
    assert record["status"] == "cancelled"
    assert record["completed_at"] is not None
    again = await cli("cancel", pending_id)
    assert again.returncode == 0
    assert "already cancelled" in again.stdout

    done = await cli("submit", "--model", "sim-model", "--follow", f"ends {uuid.uuid4()}")
    done_id = done.stderr.split()[1]
    too_late = await cli("cancel", done_id)
    assert too_late.returncode == 1
    assert "already ended completed" in too_late.stderr
    assert (await row(db, uuid.UUID(done_id)))["status"] == "completed"

    assert (await cli("cancel", str(uuid.uuid4()))).returncode == 2


async def test_cancel_stops_a_streaming_job_and_keeps_its_text(
    cli: Cli, db: asyncpg.Connection
) -> None:
    # 20 s of answer: `cancel` is a process of its own, slow to start on a loaded machine.
    prompt = f"long {uuid.uuid4()} [[sim tps=2]]"
    submitted = await cli("submit", "--model", "sim-model", prompt)
    job_id = uuid.UUID(submitted.stdout.strip())

    async def streaming() -> bool:
        return bool((await row(db, job_id))["partial_content"])

    await eventually(streaming, what="first text")
    assert (await cli("cancel", str(job_id))).returncode == 0

    async def settled() -> asyncpg.Record | None:
        record = await row(db, job_id)
        return record if record["response_data"] is not None else None

    record = await eventually(settled, timeout_s=10, what="the worker settling the cancel")
    assert record["status"] == "cancelled"
    assert record["completed_at"] is not None
    # The text so far stays: a proper prefix of the whole answer (40 tokens).
    whole = answer_text([{"role": "user", "content": prompt}], 40)
    assert record["partial_content"]
    assert whole.startswith(record["partial_content"])
    assert record["partial_content"] != whole


async def test_an_unreachable_database_is_one_line_without_the_password(cli: Cli) -> None:
    result = await cli(
        "status",
        str(uuid.uuid4()),
        DATABASE_URL="postgresql://app:s3cret-pass@127.0.0.1:1/app",
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "s3cret-pass" not in result.stderr
    assert result.stderr.startswith("streaming-worker status: ")
