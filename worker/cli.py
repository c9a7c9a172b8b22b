"""The `streaming-worker` command line (contract section 6)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

DESCRIPTION = """\
Runs LLM streaming jobs: receives job ids from SQS, streams each answer through LiteLLM and
writes the growing text to PostgreSQL. Settings come from the environment and .env
(DATABASE_URL, SQS_QUEUE_URL, AWS_ENDPOINT_URL_SQS, AWS_REGION, WORKER_*; see README)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming-worker", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "migrate",
        help="create or upgrade the schema (idempotent)",
        description="Create or upgrade the job tables. Reads DATABASE_URL.",
    )
    run = commands.add_parser(
        "run",
        help="run the worker",
        description="Long-poll SQS and run jobs until SIGTERM/SIGINT (or as the flags say). "
        "Reads every setting.",
    )
    modes = run.add_mutually_exclusive_group()
    modes.add_argument(
        "--drain", action="store_true", help="exit once the queue is empty and nothing runs"
    )
    modes.add_argument("--once", action="store_true", help="process at most one message, then exit")
    modes.add_argument(
        "--job-id", type=uuid.UUID, metavar="UUID", help="run this job from the table, no queue"
    )
    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline locally: no AWS account, no keys",
        description="Start an in-process SQS server and the LLM simulator, submit jobs as the "
        "app does, run the worker until they are done and show them streaming. Uses "
        "DATABASE_URL, else the local PostgreSQL's `streaming_worker_demo` database.",
    )
    demo.add_argument("--jobs", type=int, default=8, help="how many jobs (default 8)")
    demo.add_argument("--tokens", type=int, default=120, help="tokens per answer (default 120)")
    demo.add_argument(
        "--tokens-per-s", type=float, default=40, help="streaming speed per job (default 40)"
    )
    demo.add_argument("--concurrency", type=int, default=8, help="WORKER_CONCURRENCY (default 8)")
    commands.add_parser(
        "simulate-llm",
        help="serve the OpenAI-compatible LLM simulator (see --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate-llm"]:
        from worker import simulator

        return simulator.main(args_list[1:])
    args = build_parser().parse_args(args_list)

    from worker import logs
    from worker.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        print(f"streaming-worker: invalid settings:\n{error}", file=sys.stderr)
        return 2
    # The demo's own view is the output; the worker's events would drown it.
    level = "warning" if args.command == "demo" else settings.log_level
    logs.configure(level=level, fmt=settings.log_format)

    if args.command == "migrate":
        return _run(_migrate(settings.database_url.get_secret_value()))
    if args.command == "demo":
        from worker.demo import run_demo

        return _run(
            run_demo(
                jobs=args.jobs,
                tokens=args.tokens,
                tokens_per_s=args.tokens_per_s,
                concurrency=args.concurrency,
            )
        )

    from worker import app
    from worker.llm import ModelsFileError
    from worker.supervisor import Mode

    work: Coroutine[Any, Any, int]
    if args.job_id is not None:
        work = app.run_job(settings, args.job_id)
    else:
        mode = Mode.DRAIN if args.drain else Mode.ONCE if args.once else Mode.DAEMON
        work = app.run_worker(settings, mode=mode)
    try:
        return _run(work)
    except ModelsFileError as error:
        print(f"streaming-worker: {error}", file=sys.stderr)
        return 2


async def _migrate(dsn: str) -> int:
    import structlog

    from worker.store import JobStore

    store = await JobStore.connect(dsn, pool_size=1)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    structlog.get_logger(__name__).info("migrated", applied=applied)
    return 0


def _run(work: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)
