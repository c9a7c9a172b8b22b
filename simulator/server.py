"""One aiohttp app serving every provider's routes at once, the request log and `/healthz`;
`Simulator` runs it in this process on a free port (tests, the demo).

A request goes: record it, read it in its provider's format, check its credentials, follow
its directive (a scripted error, or an answer with a pace and maybe a fault), send it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator.answers import (
    Answer,
    Text,
    answer_tokens,
    count_prompt_tokens,
    fingerprint,
    last_user_text,
)
from simulator.bedrock import BedrockFormat
from simulator.config import SimulatorConfig
from simulator.gemini import GeminiFormat
from simulator.log import Received, RequestLog
from simulator.openai import AzureFormat, OpenAIFormat
from simulator.rich import rich_answer, text_token_count
from simulator.script import Directive, DirectiveError, parse_directive
from simulator.stream import Plan, send_stream, send_whole
from simulator.wire import ChatRequest, RequestError, WireFormat

WIRE_FORMATS: tuple[type[WireFormat], ...] = (
    OpenAIFormat,
    AzureFormat,
    GeminiFormat,
    BedrockFormat,
)
_CONFIG = web.AppKey("simulator_config", SimulatorConfig)
_LOG = web.AppKey("simulator_log", RequestLog)


def _record(request: web.Request, provider: str, body: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0],
        "query": dict(request.query),
        "headers": dict(request.headers),
        "body": body,
        "prompt": "",
        "model": None,
        "fingerprint": fingerprint(()),
        "outcome": "streaming",
        "chunks_sent": 0,
    }


def _directive(chat: ChatRequest, provider: str, log: RequestLog, key: str) -> Directive:
    directive = parse_directive(last_user_text(chat.conversation))
    if directive.tools and chat.conversation and chat.conversation[-1].role != "user":
        # The conversation went on past the question (the tools' results came back): the
        # model answers them instead of calling the tools again, as a real one would.
        directive = directive.without_tools()
    if not directive.applies_to(provider):
        return directive.without_faults()
    if directive.is_fault:
        seen = log.count_fault(key)
        if directive.times is not None and seen > directive.times:
            return directive.without_faults()
    return directive


def _plan(
    config: SimulatorConfig, fmt: WireFormat, chat: ChatRequest, directive: Directive
) -> Plan:
    count = text_token_count(directive, config.tokens)
    tokens = answer_tokens(chat.conversation, count, ending=config.answer_ending)
    truncated = chat.max_tokens is not None and chat.max_tokens < count
    tps = config.tokens_per_s if directive.tps is None else directive.tps
    ttft_s = config.ttft_s if directive.ttft is None else directive.ttft
    model, prompt_tokens = fmt.reported_model(chat), count_prompt_tokens(chat.conversation)
    if directive.is_rich:
        rich = rich_answer(
            model=model,
            conversation=chat.conversation,
            directive=directive,
            tools=chat.tools,
            text=tokens[: chat.max_tokens],
            truncated=truncated,
            prompt_tokens=prompt_tokens,
            shape=fmt.shape(chat, directive),
        )
        return Plan(
            answer=rich.answer, tps=tps, ttft_s=ttft_s, fault=directive,
            think_s=directive.think_s, think_count=rich.think_count,
        )  # fmt: skip
    answer = Answer(
        model=model,
        events=tuple(Text(token) for token in tokens[: chat.max_tokens]),
        finish="length" if truncated else "stop",
        prompt_tokens=prompt_tokens,
    )
    return Plan(answer=answer, tps=tps, ttft_s=ttft_s, fault=directive)


def _failed(record: dict[str, Any], response: web.Response) -> web.Response:
    record["outcome"] = f"error:{response.status}"
    return response


async def _answer(request: web.Request, fmt: WireFormat) -> web.StreamResponse:
    config, log = request.app[_CONFIG], request.app[_LOG]
    try:
        body: Any = json.loads(await request.read())
    except ValueError:
        body = None
    record = log.add(_record(request, fmt.provider, body))
    try:
        chat = fmt.read(request, body)
        record["model"] = chat.model
        record["prompt"] = last_user_text(chat.conversation)
        record["fingerprint"] = fingerprint(chat.conversation)
        if (refused := fmt.refusal(request)) is not None:
            return _failed(record, refused)
        directive = _directive(chat, fmt.provider, log, record["fingerprint"])
        # Planned here so that tool calls the request's tools cannot make are a 400 too.
        plan = _plan(config, fmt, chat, directive)
    except (RequestError, DirectiveError) as error:
        return _failed(record, fmt.error(400, str(error)))
    if directive.status:
        refused = fmt.error(
            directive.status,
            f"simulated {directive.status}",
            code=directive.code,
            retry_after_s=directive.retry_after,
        )
        return _failed(record, refused)
    try:
        if chat.stream:
            renderer = fmt.renderer(chat, plan.answer)
            return await send_stream(
                request, record, plan, renderer, content_type=fmt.content_type, log=log
            )
        try:
            whole = fmt.complete(chat, plan.answer)
        except RequestError as error:
            return _failed(record, fmt.error(400, str(error)))
        return await send_whole(request, record, plan, whole)
    except asyncio.CancelledError:
        # Servers started with handler_cancellation=True cancel us when the client leaves.
        record["outcome"] = "client_disconnected"
        raise


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _requests(request: web.Request) -> web.Response:
    log = request.app[_LOG]
    if request.method == "DELETE":
        log.clear()
    return web.json_response(log.records)


def build_app(config: SimulatorConfig | None = None) -> web.Application:
    """The simulator's application: every provider's routes; all state lives on the app."""
    app = web.Application()
    app[_CONFIG] = config or SimulatorConfig()
    app[_LOG] = RequestLog()
    for wire_format in WIRE_FORMATS:
        fmt = wire_format(app[_CONFIG])

        async def handle(request: web.Request, fmt: WireFormat = fmt) -> web.StreamResponse:
            return await _answer(request, fmt)

        for route in fmt.routes:
            app.router.add_post(route, handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_delete("/_sim/requests", _requests)
    return app


def request_log(app: web.Application) -> RequestLog:
    """The request log of an app from `build_app`."""
    return app[_LOG]


def runner_for(app: web.Application) -> web.AppRunner:
    """A runner as the simulator's servers use it: handlers cancelled when a client leaves,
    a short shutdown (stalled streams would otherwise hold it for a minute), no access log."""
    return web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0,
        access_log=None,
    )  # fmt: skip


class Simulator:
    """The simulator in this process, on a free port of 127.0.0.1 unless told otherwise.

    `async with Simulator(SimulatorConfig(...)) as sim:` then `sim.url`, `sim.requests(...)`.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimulatorConfig()
        self.app = build_app(self.config)
        self.log = request_log(self.app)
        self.url = ""
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start serving; returns the base URL (`http://127.0.0.1:PORT`)."""
        self._runner = runner_for(self.app)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        await web.SockSite(self._runner, sock).start()
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def requests(self, *, provider: str | None = None, prompt: str | None = None) -> list[Received]:
        """What the simulator received, optionally one provider's route or one prompt only."""
        return self.log.received(provider=provider, prompt=prompt)

    def max_active(self, provider: str) -> int:
        """The most streams that provider's routes sent at once so far."""
        return self.log.max_active[provider]

    def reset(self) -> None:
        """Forget the request log and the fault counters."""
        self.log.clear()
