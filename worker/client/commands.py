"""`streaming-worker submit/status/cancel`: the app's side of the contract, for integrators:
submit a job, follow its answer, read its status, cancel it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

from worker import exit_codes
from worker.client import queries
from worker.exit_codes import ExitCode
from worker.jobs import Status
from worker.postgres import Database
from worker.queue import JobQueue
from worker.settings import Settings

# How often a follower polls; the worker flushes every WORKER_FLUSH_INTERVAL_S (0.2 s).
FOLLOW_INTERVAL_S = 0.2
# A job still `pending` this long usually means no worker reads the queue: say so once.
PENDING_HINT_S = 30.0


def build_request(
    *,
    model: str,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """`request_data` as the app writes it (contract section 2)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    return {"model": model, "messages": messages, "options": options}


async def submit(settings: Settings, requests: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Submit jobs as the app does; returns their ids in order."""
    async with (
        await _connect(settings) as db,
        JobQueue.open(
            settings.sqs_queue_url,
            region=settings.aws_region,
            endpoint_url=settings.sqs_endpoint_url,
        ) as queue,
    ):
        return [await submit_one(db, queue, request) for request in requests]


async def submit_one(db: Database, queue: JobQueue, request_data: dict[str, Any]) -> uuid.UUID:
    """Insert the row, then send `{"jobId": ...}`: the app's order, so the row exists first."""
    job_id = await queries.insert_job(db, request_data)
    await queue.send(job_id)
    return job_id


@dataclass
class Follower:
    """Prints a job's answer as it grows, from its deltas, with a cursor `(attempt, seq)`."""

    db: Database
    job_id: uuid.UUID
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    interval_s: float = FOLLOW_INTERVAL_S
    attempt: int = 0
    seq: int = 0
    shown: int = 0  # characters of the current attempt printed so far

    async def run(self) -> Status | None:
        """Follow until the job ends; returns its final status (None: the row is gone)."""
        started = time.monotonic()
        hinted = False
        while True:
            # Status before deltas: a delta commits with (or before) the status it goes
            # with, so once a terminal status is seen, the read after it has every delta.
            status = await queries.job_status(self.db, self.job_id)
            if status is None:
                return None
            await self._print_new()
            if status.is_terminal:
                await self._print_content_if_deltas_expired()
                return status
            if status is Status.PENDING and not hinted:
                hinted = time.monotonic() - started > PENDING_HINT_S
                if hinted:
                    self._note(
                        f"still pending after {PENDING_HINT_S:.0f} s: is a worker reading"
                        " SQS_QUEUE_URL? (README, Troubleshooting)"
                    )
            await asyncio.sleep(self.interval_s)

    async def _print_new(self) -> None:
        deltas = await queries.deltas_after(
            self.db, self.job_id, attempt=self.attempt, seq=self.seq
        )
        for attempt, seq, content in deltas:
            if attempt != self.attempt:
                if self.shown:
                    # A higher attempt started over from empty text (contract section 7).
                    self.out.write("\n")
                    self._note(f"the answer started over (attempt {attempt})")
                self.attempt, self.shown = attempt, 0
            self.out.write(content)
            self.seq = seq
            self.shown += len(content)
        self.out.flush()

    async def _print_content_if_deltas_expired(self) -> None:
        """Deltas are swept WORKER_DELTA_RETENTION_S after the end; the row still has it all."""
        if self.attempt:
            return
        view = await queries.job_view(self.db, self.job_id)
        if view is not None and view["partial_content"]:
            self.out.write(view["partial_content"])
            self.out.flush()

    def _note(self, text: str) -> None:
        print(f"streaming-worker: {text}", file=self.err, flush=True)


def exit_code_for(status: Status | None) -> int:
    """As `run --job-id`: 0 completed or cancelled, 1 failed, 2 no such job."""
    if status is None:
        return ExitCode.USAGE
    return exit_codes.for_status(status)


async def submit_command(settings: Settings, request_data: dict[str, Any], *, follow: bool) -> int:
    [job_id] = await submit(settings, [request_data])
    if not follow:
        print(job_id)
        return ExitCode.OK
    print(f"job {job_id}", file=sys.stderr, flush=True)
    return await follow_command(settings, job_id)


async def follow_command(settings: Settings, job_id: uuid.UUID) -> int:
    async with await _connect(settings) as db:
        status = await Follower(db, job_id).run()
        view = await queries.job_view(db, job_id)
    if sys.stdout.isatty():
        print()
    if view is not None:
        print(_one_line(view), file=sys.stderr)
    return exit_code_for(status)


async def status_command(settings: Settings, job_id: uuid.UUID, *, as_json: bool) -> int:
    async with await _connect(settings) as db:
        view = await queries.job_view(db, job_id)
    if view is None:
        print(f"streaming-worker: no job {job_id}", file=sys.stderr)
        return ExitCode.USAGE
    if as_json:
        print(json.dumps(_public(view), indent=2))
    else:
        print(_describe(view))
    return ExitCode.OK


async def cancel_command(settings: Settings, job_id: uuid.UUID) -> int:
    """0 when the job is cancelled now (or already was), 1 when it had already ended."""
    async with await _connect(settings) as db:
        changed, status = await queries.cancel_job(db, job_id)
    if status is None:
        print(f"streaming-worker: no job {job_id}", file=sys.stderr)
        return ExitCode.USAGE
    if changed:
        print(f"{job_id} cancelled")
        return ExitCode.OK
    if status is Status.CANCELLED:
        print(f"{job_id} was already cancelled")
        return ExitCode.OK
    print(f"{job_id} already ended {status.value}: not cancelled", file=sys.stderr)
    return ExitCode.JOB_FAILED


async def _connect(settings: Settings) -> Database:
    return await Database.connect(settings.database_url.get_secret_value())


def _public(view: dict[str, Any]) -> dict[str, Any]:
    """The view as JSON: the text's length rather than the text, times in ISO 8601."""
    out = {key: value for key, value in view.items() if key != "partial_content"}
    out["id"] = str(view["id"])
    out["content_chars"] = len(view["partial_content"])
    for key in ("created_at", "started_at", "updated_at", "completed_at"):
        out[key] = None if view[key] is None else view[key].isoformat()
    return out


def _describe(view: dict[str, Any]) -> str:
    error = (
        f"{view['error_code']}: {view['error_message']}"
        if view["error_code"] or view["error_message"]
        else "-"
    )
    response = view["response_data"] or {}
    answered_by = " ".join(
        str(part) for part in (response.get("model"), response.get("provider")) if part
    )
    lines = [
        ("job", str(view["id"])),
        ("status", view["status"]),
        ("model", view["model"] or "-"),
        ("answered by", answered_by or "-"),
        ("attempts", str(view["attempts"])),
        ("error", error),
        ("usage", _usage(response)),
        ("text", f"{len(view['partial_content'])} characters"),
        ("created", _time(view["created_at"])),
        ("started", _time(view["started_at"])),
        ("updated", _time(view["updated_at"])),
        ("ended", _time(view["completed_at"])),
    ]
    return "\n".join(f"{name:<12} {value}" for name, value in lines)


def _one_line(view: dict[str, Any]) -> str:
    parts = [str(view["status"]), f"attempts {view['attempts']}"]
    if view["error_code"]:
        parts.append(f"{view['error_code']}: {view['error_message']}")
    parts.append(_usage(view["response_data"] or {}))
    return "streaming-worker: " + ", ".join(part for part in parts if part != "-")


def _usage(response: dict[str, Any]) -> str:
    usage = response.get("usage") or {}
    if not usage:
        return "-"
    text = (
        f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)}"
        f" completion = {usage.get('total_tokens', 0)} tokens"
    )
    if response.get("cost_usd") is not None:
        text += f", ${response['cost_usd']:.6f}"
    if response.get("ttft_ms") is not None:
        text += f", first token {response['ttft_ms']} ms"
    if response.get("duration_ms") is not None:
        text += f", {response['duration_ms'] / 1000:.1f} s"
    return text


def _time(value: Any) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")
