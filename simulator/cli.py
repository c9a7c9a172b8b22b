"""`python -m simulator` and `streaming-worker simulate-llm`: serve until SIGTERM or SIGINT,
in one process or several sharing the port (`--processes`, SO_REUSEPORT; the benchmark's)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from simulator.config import SimulatorConfig
from simulator.server import build_app, runner_for

DESCRIPTION = (
    "LLM simulator: OpenAI, Azure OpenAI, Gemini and Bedrock ConverseStream streaming APIs "
    "on one port, with deterministic answers and faults scripted by [[sim ...]] directives."
)


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


async def _serve(config: SimulatorConfig, sock: socket.socket, announce: str | None) -> None:
    runner = runner_for(build_app(config))
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        if announce:
            print(announce, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _run(config: SimulatorConfig, sock: socket.socket, announce: str | None) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional speed-up

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(config, sock, announce))


def _child(host: str, port: int, config: SimulatorConfig, ready: Any) -> None:
    sock = _bind(host, port, reuse_port=True)
    ready.set()
    _run(config, sock, None)


def _parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="simulate-llm", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=defaults.tokens)
    parser.add_argument("--tokens-per-s", type=float, default=defaults.tokens_per_s)
    parser.add_argument("--ttft-s", type=float, default=defaults.ttft_s)
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port")
    keys = parser.add_argument_group("credentials each route demands (unset: any is accepted)")
    keys.add_argument("--openai-key", help="OpenAI's bearer key")
    keys.add_argument("--azure-key", help="Azure's api-key")
    keys.add_argument("--gemini-key", help="Gemini's x-goog-api-key")
    keys.add_argument(
        "--bedrock-key-id", help="the AWS access key id Bedrock requests are signed with"
    )
    keys.add_argument("--bedrock-region", help="the region Bedrock requests are signed for")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    config = SimulatorConfig(
        tokens=args.tokens,
        tokens_per_s=args.tokens_per_s,
        ttft_s=args.ttft_s,
        openai_key=args.openai_key,
        azure_key=args.azure_key,
        gemini_key=args.gemini_key,
        bedrock_key_id=args.bedrock_key_id,
        bedrock_region=args.bedrock_region,
    )
    sock = _bind(args.host, args.port, reuse_port=args.processes > 1)
    port = sock.getsockname()[1]
    # Spawn, not fork: children must not inherit this process's state or event loop.
    ctx = multiprocessing.get_context("spawn")
    children = []
    for _ in range(args.processes - 1):
        ready = ctx.Event()
        child = ctx.Process(target=_child, args=(args.host, port, config, ready), daemon=True)
        child.start()
        children.append((child, ready))
    try:
        if not all(ready.wait(30) for _, ready in children):
            print("simulator: a worker process failed to start", file=sys.stderr)
            return 1
        host = f"[{args.host}]" if ":" in args.host else args.host
        _run(config, sock, f"simulator listening on http://{host}:{port}")
    finally:
        for child, _ in children:
            child.terminate()
        for child, _ in children:
            child.join(5)
    return 0
