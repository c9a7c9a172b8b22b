"""The `streaming-worker` command line (contract section 6)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from worker.settings import Settings

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
        "app does (plain answers, a thinking job, a tool-calling job), run the worker until "
        "they are done, show them streaming and check each against what the simulator sent; "
        "Ctrl-C stops it gracefully. Reads DATABASE_URL only; when it is unset, uses the local "
        "PostgreSQL (postgresql://postgres@127.0.0.1:5432, database `streaming_worker_demo`), "
        "else an embedded one (the `pgserver` package: pip install -e '.[demo]').",
    )
    demo.add_argument(
        "--jobs",
        type=int,
        default=8,
        help="how many plain jobs, besides the thinking and the tool-calling one (default 8)",
    )
    demo.add_argument("--tokens", type=int, default=120, help="tokens per answer (default 120)")
    demo.add_argument(
        "--tokens-per-s", type=float, default=40, help="streaming speed per job (default 40)"
    )
    demo.add_argument("--concurrency", type=int, default=8, help="WORKER_CONCURRENCY (default 8)")
    demo.add_argument(
        "--short",
        action="store_true",
        help="a few small, fast jobs (for CI): 3 plain jobs of 24 tokens at 200 tokens/s, "
        "a short thinking job and a tool-calling job",
    )
    demo.add_argument(
        "--embedded-postgres",
        action="store_true",
        help="use the embedded PostgreSQL (pgserver) even if DATABASE_URL is set or a local "
        "server is running",
    )
    _add_client_commands(commands)
    commands.add_parser(
        "simulate-llm",
        help="serve the OpenAI-compatible LLM simulator (see --help)",
        add_help=False,
    )
    return parser


_CLIENT_COMMANDS = ("submit", "status", "cancel")
_CLIENT_SETTINGS = "Reads DATABASE_URL"
_QUEUE_SETTINGS = "SQS_QUEUE_URL, AWS_ENDPOINT_URL_SQS, AWS_REGION and the AWS credential chain"


def _add_client_commands(commands: Any) -> None:
    """`submit`, `status`, `cancel`: what the app does, from a shell (worker/client/)."""
    submit = commands.add_parser(
        "submit",
        help="submit a job as the app does (prints its id; --follow prints the answer)",
        description="Insert a `pending` row into ai_streaming_jobs and send its SQS message "
        '{"jobId": ...}, exactly as the app does, then print the job id. With --follow, '
        "print the answer as it grows on stdout (from ai_streaming_job_deltas, with a cursor), "
        "the reasoning on stderr after `thinking: `, and the tool calls the job ended with "
        "on stderr; exit by the job's end: 0 completed or cancelled, 1 failed. "
        f"{_CLIENT_SETTINGS}, {_QUEUE_SETTINGS}.",
    )
    submit.add_argument("prompt", help="the user message")
    submit.add_argument("--model", required=True, help="a model_name from the worker's models file")
    submit.add_argument("--system", help="a system message before the prompt")
    submit.add_argument("--temperature", type=float, help="options.temperature")
    submit.add_argument("--max-tokens", type=int, help="options.max_tokens")
    submit.add_argument(
        "--tools",
        type=Path,
        metavar="FILE",
        help="options.tools from a JSON file: OpenAI's `tools` list, one tool of it, or one "
        'function {"name", "parameters"}',
    )
    submit.add_argument(
        "--tool-choice",
        metavar="CHOICE",
        help="options.tool_choice: auto, none, required, or a tool's name to force that tool",
    )
    submit.add_argument(
        "--reasoning-effort",
        metavar="EFFORT",
        help="options.reasoning_effort (low, medium, high, ...: what LiteLLM takes for the model)",
    )
    submit.add_argument(
        "--follow", action="store_true", help="print the answer as it grows, until the job ends"
    )
    status = commands.add_parser(
        "status",
        help="show a job's status, finish reason, tool calls, attempts, error and usage",
        description="Print a job's row as the app sees it: status, model, attempts, finish "
        "reason, error code and message, usage (with reasoning and cached tokens) and cost, "
        "text and reasoning length, tool calls and times. Exit 2 if there is no such "
        f"job. {_CLIENT_SETTINGS}.",
    )
    status.add_argument("job_id", type=uuid.UUID, metavar="JOB_ID", help="the job's id (a uuid)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    cancel = commands.add_parser(
        "cancel",
        help="cancel a job unless it already ended",
        description="Set a job `cancelled` as the app does, only if it has not ended; a "
        "worker streaming it stops within 2 s and keeps the text so far. Exit 0 when it is "
        f"cancelled, 1 when it had already ended, 2 if there is no such job. {_CLIENT_SETTINGS}.",
    )
    cancel.add_argument("job_id", type=uuid.UUID, metavar="JOB_ID", help="the job's id (a uuid)")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate-llm"]:
        import simulator

        return simulator.main(args_list[1:])
    args = build_parser().parse_args(args_list)

    from worker import logs
    from worker.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        print(f"streaming-worker: invalid settings:\n{error}", file=sys.stderr)
        return 2
    # The demo's and the client's own output is what matters; the worker's events would drown it.
    quiet = args.command in ("demo", *_CLIENT_COMMANDS)
    logs.configure(level="warning" if quiet else settings.log_level, fmt=settings.log_format)

    if args.command == "migrate":
        return _database_command("migrate", _migrate(settings.database_url.get_secret_value()))
    if args.command == "demo":
        return _demo(args)
    if args.command in _CLIENT_COMMANDS:
        return _client(args, settings)
    return _worker(args, settings)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
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
        return _database_command("run", work)
    except ModelsFileError as error:
        print(f"streaming-worker: {error}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    # Ctrl-C before the worker runs (LiteLLM's import, setup) or after it stopped: no traceback.
    try:
        from worker.client import demo
    except KeyboardInterrupt:
        return 130
    options = (
        demo.DemoOptions.short()
        if args.short
        else demo.DemoOptions(
            jobs=args.jobs,
            tokens=args.tokens,
            tokens_per_s=args.tokens_per_s,
            concurrency=args.concurrency,
        )
    )
    try:
        return _run(demo.run_demo(options, embedded_postgres=args.embedded_postgres))
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    except demo.DemoError as error:
        print(f"streaming-worker demo: {error}", file=sys.stderr)
        return 2


def _client(args: argparse.Namespace, settings: Settings) -> int:
    from worker.client import commands
    from worker.postgres import DatabaseUnavailable

    work: Coroutine[Any, Any, int]
    if args.command == "submit":
        request_data = _submit_request(args)
        if request_data is None:
            return 2
        work = commands.submit_command(settings, request_data, follow=args.follow)
    elif args.command == "status":
        work = commands.status_command(settings, args.job_id, as_json=args.json)
    else:
        work = commands.cancel_command(settings, args.job_id)
    try:
        return _run(work)
    except KeyboardInterrupt:
        return 130  # stopped following; the job itself goes on
    except Exception as error:  # noqa: BLE001 (one clear line, never a traceback)
        # Connection errors name host and port, never the password in DATABASE_URL.
        kind = type(error).__name__
        hint = " (run `streaming-worker migrate` first)" if kind == "UndefinedTableError" else ""
        # DatabaseUnavailable already names the error underneath (ConnectionRefusedError: …).
        what = str(error) if isinstance(error, DatabaseUnavailable) else f"{kind}: {error}"
        print(f"streaming-worker {args.command}: {what}{hint}", file=sys.stderr)
        return 1


def _submit_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """`request_data` from submit's flags; None, once said why, for a `--tools` file that
    cannot be sent (checked before anything is written or sent)."""
    from worker.client import request

    try:
        tools = None if args.tools is None else request.load_tools(args.tools)
    except request.ToolsFileError as error:
        print(f"streaming-worker submit: {error}", file=sys.stderr)
        return None
    return request.build_request(
        model=args.model,
        prompt=args.prompt,
        system=args.system,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        tools=tools,
        tool_choice=args.tool_choice,
        reasoning_effort=args.reasoning_effort,
    )


def _database_command(name: str, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`; a database that cannot be used is one clear line, never a traceback:
    exit 2 for a malformed DATABASE_URL, 1 for a database that cannot be reached."""
    from worker.postgres import DatabaseUnavailable, DatabaseUrlInvalid

    try:
        return _run(work)
    except DatabaseUrlInvalid as error:
        print(f"streaming-worker {name}: {error}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as error:
        print(f"streaming-worker {name}: {error}", file=sys.stderr)
        return 1


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
