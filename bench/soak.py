"""The soak run (`make soak`, `python -m bench.soak [--minutes N]`; not in CI).

Two worker processes, a throwaway database, moto's SQS server (a queue with a DLQ) and the LLM
simulator, all on 127.0.0.1. For `--minutes` jobs are fed as the app sends them, keeping about
twice the workers' concurrency waiting, with faults throughout: one worker killed with -9 and
restarted every ~30 s (alternating), the workers' PostgreSQL backends terminated every ~20 s,
provider faults in a share of the jobs (429 with Retry-After, 500s, streams dropped before and
mid-answer, stalls shorter and longer than the stall timeout), jobs cancelled by the app
mid-stream and poison messages. Then every job ends and is checked (bench/soak_check.py); the
report goes to `bench-results/<timestamp>-soak.{json,md}`. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from bench import postgres
from bench.cli import _loop_factory
from bench.config import (
    AWS_ENV,
    DEFAULT_DATABASE_URL,
    HOST,
    REGION,
    BenchError,
    note,
)
from bench.harness import migrate
from bench.processes import READY_TIMEOUT_S, child_env, free_port, http_ok, spawn, wait_for
from bench.providers import models_document
from bench.sim import simulator_command, simulator_url
from bench.soak_check import check_run, write_report
from bench.soak_faults import (
    Faults,
    Slot,
    cancel_when_streaming,
    every,
    kill_one,
    send_poison,
    terminate_backends,
)
from bench.soak_plan import MAX_ATTEMPTS, PROVIDER_RETRIES, STALL_TIMEOUT_S, JobSpec, Plan
from bench.workload import send
from worker.postgres import Database
from worker.queue import JobQueue

CONCURRENCY = 16  # per worker
LEASE_S = 10.0  # the defaults: the takeover figure is measured with them
TAKEOVER_INTERVAL_S = 2.0
VISIBILITY_TIMEOUT_S = 60
MAX_RECEIVE_COUNT = 5
KILL_EVERY_S = 30.0
TERMINATE_EVERY_S = 20.0
POISON_EVERY_S = 10.0
FEED_BATCH = 10
FEED_POLL_S = 0.2
STATUS_EVERY_S = 15.0
DRAIN_JOBS_S = 300.0  # after the phase: every job ends within this
DRAIN_QUEUE_S = 180.0  # then the queue and the DLQ empty within this (a visibility timeout)


@dataclass
class Run:
    args: argparse.Namespace
    run_dir: Path
    admin: Database
    db: Database
    db_name: str
    dsn: str
    sqs: Any
    queue_url: str
    dlq_url: str
    sqs_url: str
    slots: list[Slot]
    plan: Plan
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    faults: Faults = field(default_factory=Faults)
    job_ids: dict[str, JobSpec] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    to_cancel: dict[str, float] = field(default_factory=dict)
    trackers: list[asyncio.Task[None]] = field(default_factory=list)
    backlog: list[int] = field(default_factory=list)

    @property
    def backlog_target(self) -> int:
        return 2 * CONCURRENCY * len(self.slots)


def worker_env(dsn: str, queue_url: str, sqs_url: str, models_file: Path) -> dict[str, str]:
    return child_env(
        {
            "DATABASE_URL": dsn,
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL_SQS": sqs_url,
            "WORKER_MODELS_FILE": str(models_file),
            "WORKER_CONCURRENCY": str(CONCURRENCY),
            "WORKER_LOG_FORMAT": "json",
            "WORKER_LOG_LEVEL": "info",
            "WORKER_SHUTDOWN_GRACE_S": "5",
            "WORKER_STALL_TIMEOUT_S": f"{STALL_TIMEOUT_S:g}",
            "WORKER_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "WORKER_PROVIDER_RETRIES": str(PROVIDER_RETRIES),
            "WORKER_LEASE_S": f"{LEASE_S:g}",
            "WORKER_TAKEOVER_INTERVAL_S": f"{TAKEOVER_INTERVAL_S:g}",
            "WORKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "WORKER_DELTA_RETENTION_S": "86400",  # every delta stays for the checks
        }
    )


def create_queues(sqs: Any, name: str) -> tuple[str, str]:
    """A job queue whose redrive policy dead-letters a message after MAX_RECEIVE_COUNT."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(policy),
        },
    )["QueueUrl"]
    return str(queue_url), str(dlq_url)


async def insert(db: Database, specs: Sequence[JobSpec]) -> list[str]:
    rows = await db.fetch(
        "INSERT INTO ai_streaming_jobs (user_id, request_data)"
        " SELECT u, r::jsonb FROM unnest($1::text[], $2::text[]) AS t(u, r)"
        " RETURNING id::text, user_id",
        [str(spec.index) for spec in specs],
        [json.dumps(spec.request) for spec in specs],
    )
    by_index = {int(row["user_id"]): row["id"] for row in rows}
    return [by_index[spec.index] for spec in specs]


async def pending(db: Database) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM ai_streaming_jobs WHERE status = 'pending'"
    )
    return count


async def feed(run: Run, queue: JobQueue) -> None:
    """Keep about `backlog_target` jobs waiting: rows written, then their messages sent."""
    while not run.stop.is_set():
        waiting = await pending(run.db)
        run.backlog.append(waiting)
        room = min(run.backlog_target - waiting, FEED_BATCH)
        if room > 0:
            specs = run.plan.next_jobs(room)
            ids = await insert(run.db, specs)
            await asyncio.gather(*(send(queue, job_id, run.sent) for job_id in ids))
            for job_id, spec in zip(ids, specs, strict=True):
                run.job_ids[job_id] = spec
                if spec.kind == "cancelled":
                    run.to_cancel[job_id] = time.time()
        await asyncio.sleep(FEED_POLL_S)


async def kills(run: Run) -> None:
    rng = random.Random(run.args.seed + 1)  # noqa: S311 (a schedule, not a secret)
    number = 0

    async def once() -> None:
        nonlocal number
        tracker = await kill_one(run.slots, run.faults, run.dsn, number, lease_s=LEASE_S)
        number += 1
        run.trackers.append(tracker)

    await every(run.stop, rng, KILL_EVERY_S, once)


async def terminations(run: Run) -> None:
    rng = random.Random(run.args.seed + 2)  # noqa: S311 (a schedule, not a secret)
    await every(
        run.stop, rng, TERMINATE_EVERY_S,
        lambda: terminate_backends(run.admin, run.db_name, run.faults),
    )  # fmt: skip


async def poison(run: Run) -> None:
    rng = random.Random(run.args.seed + 3)  # noqa: S311 (a schedule, not a secret)
    number = 0

    async def once() -> None:
        nonlocal number
        await asyncio.to_thread(send_poison, run.sqs, run.queue_url, run.faults, number)
        number += 1

    await every(run.stop, rng, POISON_EVERY_S, once)


async def watch(run: Run, began: float) -> None:
    """Progress lines; a worker that exits unasked is a finding: recorded, then restarted."""
    async with await postgres.connect(run.dsn) as db:
        await _watch_on(db, run, began)


async def _watch_on(db: Database, run: Run, began: float) -> None:
    last = 0.0
    while not run.stop.is_set():
        for slot in run.slots:
            if slot.child is not None and not slot.killing and not slot.child.alive():
                code = slot.child.popen.wait()
                slot.record_exit(code, how="exited unasked")
                run.faults.unexpected_exits.append(
                    {"worker": slot.child.name, "exit_code": code, "log": slot.child.log_tail(30)}
                )
                note(f"{slot.child.name} exited by itself ({code}); restarting it")
                slot.start()
        if time.monotonic() - last >= STATUS_EVERY_S:
            last = time.monotonic()
            counts = await status_counts(db)
            note(
                f"{last - began:5.0f} s: sent {len(run.sent)}, {counts}, kills "
                f"{len(run.faults.kills)}, terminations {len(run.faults.terminations)}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop.wait(), 1.0)


async def status_counts(db: Database) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM ai_streaming_jobs GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def drain(run: Run, queue: JobQueue) -> dict[str, Any]:
    """After the phase: every job ends, then the queue and its DLQ empty (bounded waits)."""
    began = time.monotonic()
    unended = -1
    while time.monotonic() - began < DRAIN_JOBS_S:
        counts = await status_counts(run.db)
        unended = sum(n for status, n in counts.items() if status in NOT_ENDED)
        if unended == 0 and not run.to_cancel:
            break
        await asyncio.sleep(1)
    jobs_s = time.monotonic() - began
    depth: dict[str, dict[str, int]] = {}
    while time.monotonic() - began < DRAIN_JOBS_S + DRAIN_QUEUE_S:
        depth = await queue.depth()
        if all(n == 0 for counts in depth.values() for n in counts.values()):
            break
        await asyncio.sleep(2)
    return {
        "jobs_ended_after_s": round(jobs_s, 1),
        "unended_at_deadline": unended,
        "queue_empty_after_s": round(time.monotonic() - began, 1),
        "queue_depth": depth,
    }


NOT_ENDED = ("pending", "processing", "streaming")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    os.environ.update(AWS_ENV)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (Path("bench-results") / "tmp" / f"{stamp}-soak").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    began_wall = time.time()
    async with contextlib.AsyncExitStack() as stack:
        admin = await postgres.connect(args.database_url)
        stack.push_async_callback(admin.close)
        db_name = await postgres.create_bench_database(admin)
        if not args.keep_database:
            stack.push_async_callback(postgres.drop_database, admin, db_name)
        dsn = postgres.database_in(args.database_url, db_name)
        note(f"database {db_name}; logs in {run_dir}")
        await migrate(dsn, run_dir)
        moto_port = free_port()
        moto = spawn(
            "moto",
            [str(Path(sys.executable).with_name("moto_server")), "-H", HOST, "-p", str(moto_port)],
            logs_dir=run_dir, env=child_env(), cpus=None,
        )  # fmt: skip
        stack.callback(moto.stop)
        sim = spawn("simulator", simulator_command(processes=1), logs_dir=run_dir,
                    env=child_env(), cpus=None)  # fmt: skip
        stack.callback(sim.stop)
        sqs_url = f"http://{HOST}:{moto_port}"
        await wait_for(lambda: http_ok(f"{sqs_url}/moto-api/"), what="moto", child=moto,
                       timeout_s=30)  # fmt: skip
        sim_url = await simulator_url(sim)
        sqs = boto3.client("sqs", endpoint_url=sqs_url, region_name=REGION)
        queue_url, dlq_url = create_queues(sqs, f"soak-{secrets.token_hex(4)}")
        models_file = run_dir / "models.yaml"
        models_file.write_text(yaml.safe_dump(models_document(sim_url)), encoding="utf-8")
        db = await postgres.connect(dsn)
        stack.push_async_callback(db.close)
        env = worker_env(dsn, queue_url, sqs_url, models_file)
        slots = [Slot(index, env, run_dir) for index in range(2)]
        stack.callback(_stop_all, slots)
        run = Run(args, run_dir, admin, db, db_name, dsn, sqs, queue_url, dlq_url, sqs_url,
                  slots, Plan(args.seed, secrets.token_hex(3)))  # fmt: skip
        for slot in slots:
            slot.start()
        for slot in slots:
            assert slot.child is not None
            assert slot.log is not None
            log = slot.log

            async def up(log: Any = log) -> bool:
                log.poll()
                return log.started_at is not None

            await wait_for(up, what="worker start", child=slot.child, timeout_s=READY_TIMEOUT_S)
        note(f"2 workers ready; soak for {args.minutes:g} min")
        result = await phase(run)
    result["began_at"] = dt.datetime.fromtimestamp(began_wall, dt.UTC).isoformat()
    result["duration_s"] = round(time.time() - began_wall, 1)
    return result


async def phase(run: Run) -> dict[str, Any]:
    began = time.monotonic()
    async with JobQueue.open(run.queue_url, region=REGION, endpoint_url=run.sqs_url) as queue:
        loops = [
            asyncio.create_task(feed(run, queue)),
            asyncio.create_task(kills(run)),
            asyncio.create_task(terminations(run)),
            asyncio.create_task(poison(run)),
            asyncio.create_task(watch(run, began)),
        ]
        canceller = asyncio.create_task(
            cancel_when_streaming(run.dsn, run.stop, run.to_cancel, run.faults)
        )
        try:
            done, _ = await asyncio.wait(loops, timeout=run.args.minutes * 60,
                                         return_when=asyncio.FIRST_EXCEPTION)  # fmt: skip
            for task in done:
                if task.exception() is not None:
                    raise BenchError(f"a soak loop failed: {task.exception()!r}")
            run.stop.set()
            await asyncio.gather(*loops)
            phase_s = time.monotonic() - began
            note(f"phase over after {phase_s:.0f} s: {len(run.sent)} jobs sent; draining")
            drained = await drain(run, queue)
            await asyncio.wait_for(canceller, 30)
            await asyncio.gather(*run.trackers)
        finally:
            run.stop.set()
            for task in [*loops, canceller, *run.trackers]:
                task.cancel()
    final_codes = await asyncio.to_thread(_stop_all, run.slots)
    return await check_run(run, phase_s=phase_s, drained=drained, final_codes=final_codes)


def _stop_all(slots: list[Slot]) -> list[int | None]:
    """SIGTERM both workers (a graceful stop: exit 0 expected); their exit codes, None for
    one that had already exited (recorded as exited unasked)."""
    running = [slot for slot in slots if slot.child is not None and slot.child.alive()]
    for slot in running:
        assert slot.child is not None
        slot.child.signal_stop()
    codes: list[int | None] = []
    for slot in slots:
        child = slot.child
        if child is None or slot.stopped:
            continue
        slot.stopped = True
        if slot in running:
            code = child.stop()
            slot.record_exit(code, how="SIGTERM at the end")
            codes.append(code)
        else:
            slot.record_exit(child.popen.wait(), how="exited unasked")
            codes.append(None)
    return codes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="faults for this long (20)")
    parser.add_argument("--seed", type=int, default=15, help="draws jobs and fault times (15)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="an admin DSN")
    parser.add_argument(
        "--keep-database", action="store_true", help="leave the sw_bench_* database for a look"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit("--minutes must be positive")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(soak(args))
    except BenchError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("soak: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    json_path, md_path = write_report(report)
    print(json.dumps(report, indent=2))
    print(md_path.read_text(encoding="utf-8"), file=sys.stderr)
    note(f"written to {json_path} and {md_path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
