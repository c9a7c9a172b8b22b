"""OpenAI-compatible streaming LLM simulator with deterministic answers and fault injection."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

_VOCAB = (
    " the", " stream", " token", " café", " naïve", " 日本語", " Ωmega", " 🚀", " ß", "—",
    " river", " quick", " über", " façade", " 你好", " résumé", " worker", " chunk", ",",
    " data", " Ж", " jalapeño", " ✓", " answer", ".", " 🌊", " cœur", " light", " π",
)  # fmt: skip
# Cached JSON so the per-chunk hot path does no encoding work for vocabulary tokens.
_TOKEN_JSON = {tok: json.dumps(tok, ensure_ascii=False).encode() for tok in _VOCAB}
_DIRECTIVE = re.compile(r"\[\[sim((?:\s+\w+=[^\s\]]*)*)\s*\]\]")
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_DONE = b"data: [DONE]\n\n"
_SPLIT_GAP_S = 0.005  # lets the first half leave as its own TCP segment
_DISCONNECT_POLL_S = 0.05
_LATE_S = 0.05  # a chunk sent this much after its due time counts as late
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SimulatorConfig:
    """Defaults for every request; directives override them per request."""

    tokens: int = 40
    tokens_per_s: float = 50.0
    ttft_s: float = 0.05


@dataclass(frozen=True)
class _Directive:
    tokens: int | None = None
    tps: float | None = None
    ttft: float | None = None
    status: int | None = None
    code: str | None = None
    retry_after: float = 1.0
    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 3600.0
    times: int | None = None
    split: int = 0


_DIRECTIVE_TYPES: dict[str, Callable[[str], object]] = {
    "tokens": int, "tps": float, "ttft": float, "status": int, "code": str,
    "retry_after": float, "drop_after": int, "stall_after": int, "stall_s": float,
    "times": int, "split": int,
}  # fmt: skip


@dataclass
class _State:
    config: SimulatorConfig
    log: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    model: str
    tokens: list[str]
    finish: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    tps: float
    ttft: float
    fault: _Directive


class _BadRequestError(Exception):
    pass


_STATE = web.AppKey("simulator_state", _State)


def _canonical(messages: object) -> bytes:
    return json.dumps(
        messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def _fingerprint(messages: object) -> str:
    return hashlib.sha256(_canonical(messages)).hexdigest()[:16]


def answer_tokens(messages: list[dict[str, object]] | object, count: int) -> list[str]:
    """Return the deterministic answer tokens for these messages."""
    # splitmix64 instead of random.Random: the sequence is fixed by this code, not by Python.
    state = int.from_bytes(hashlib.sha256(_canonical(messages)).digest()[:8], "big")
    out: list[str] = []
    prev = -1
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        # Drawing from n-1 and skipping prev keeps consecutive tokens distinct.
        idx = z % (len(_VOCAB) - (prev >= 0))
        if 0 <= prev <= idx:
            idx += 1
        out.append(_VOCAB[idx])
        prev = idx
    if out:
        out[0] = out[0].lstrip()
    return out


def answer_text(messages: list[dict[str, object]] | object, count: int) -> str:
    """Return the deterministic answer text for these messages."""
    return "".join(answer_tokens(messages, count))


def _message_texts(message: object) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
    return []


def _parse_directive(messages: list[Any]) -> _Directive:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = " ".join(_message_texts(users[-1])) if users else ""
    values: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(text):
        for pair in match.group(1).split():
            key, _, raw = pair.partition("=")
            if key not in _DIRECTIVE_TYPES:
                raise _BadRequestError(f"unknown simulator directive key {key!r}")
            try:
                values[key] = _DIRECTIVE_TYPES[key](raw)
            except ValueError:
                raise _BadRequestError(f"bad value for simulator directive {key!r}") from None
    directive = _Directive(**values)
    if directive.status is not None and not 400 <= directive.status <= 599:
        raise _BadRequestError("simulator directive status must be 400-599")
    return directive


def _plan(body: object, state: _State, fingerprint: str) -> _Plan:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise _BadRequestError("request body must be a JSON object with a 'messages' list")
    messages: list[Any] = body["messages"]
    directive = _parse_directive(messages)
    cfg = state.config
    count = cfg.tokens if directive.tokens is None else directive.tokens
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise _BadRequestError("max_tokens must be a positive integer")
    finish = "length" if max_tokens is not None and max_tokens < count else "stop"
    count = min(count, max_tokens) if max_tokens is not None else count
    if directive.status or directive.drop_after is not None or directive.stall_after is not None:
        seen = state.faults[fingerprint] = state.faults.get(fingerprint, 0) + 1
        if directive.times is not None and seen > directive.times:
            directive = replace(directive, status=None, drop_after=None, stall_after=None)
    options = body.get("stream_options")
    words = sum(len(t.split()) for m in messages for t in _message_texts(m))
    return _Plan(
        model=str(body.get("model") or "sim-model"),
        tokens=answer_tokens(messages, count),
        finish=finish,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        prompt_tokens=max(1, words),
        tps=cfg.tokens_per_s if directive.tps is None else directive.tps,
        ttft=cfg.ttft_s if directive.ttft is None else directive.ttft,
        fault=directive,
    )


def _error(
    record: dict[str, Any], status: int, message: str, directive: _Directive
) -> web.Response:
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "api_error", None))
    record["outcome"] = f"error:{status}"
    headers = {"Retry-After": f"{directive.retry_after:g}"} if status == 429 else None
    body = {"error": {"message": message, "type": kind, "code": directive.code or code}}
    return web.json_response(body, status=status, headers=headers)


def _usage(plan: _Plan) -> dict[str, int]:
    completion = len(plan.tokens)
    total = plan.prompt_tokens + completion
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": total,
    }


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request, record: dict[str, Any]) -> None:
    record["outcome"] = "dropped"
    if request.transport is not None:
        request.transport.abort()


async def _stall(request: web.Request, record: dict[str, Any], seconds: float) -> None:
    """Stay silent on an open connection, noticing if the client hangs up."""
    record["outcome"] = "stalled"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # Polling: aiohttp does not cancel handlers on disconnect unless the server opts in.
    while (left := deadline - loop.time()) > 0:
        if _client_gone(request):
            record["outcome"] = "client_disconnected"
            return
        await asyncio.sleep(min(left, _DISCONNECT_POLL_S))
    if request.transport is not None:
        request.transport.abort()


async def _fault_at(request: web.Request, record: dict[str, Any], plan: _Plan, sent: int) -> bool:
    if plan.fault.drop_after == sent:
        _abort(request, record)
        return True
    if plan.fault.stall_after == sent:
        await _stall(request, record, plan.fault.stall_s)
        return True
    return False


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _write_split(resp: web.StreamResponse, event: bytes, start: int) -> None:
    cut = next((i + 1 for i in range(start, len(event)) if event[i] >= 0x80), len(event))
    await resp.write(event[:cut])
    if cut < len(event):
        await asyncio.sleep(_SPLIT_GAP_S)
        await resp.write(event[cut:])


async def _send_events(
    request: web.Request, resp: web.StreamResponse, record: dict[str, Any], plan: _Plan
) -> None:
    head: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": plan.model,
    }
    # Byte templates: each content chunk is prefix + cached token JSON + suffix.
    prefix = b"data: " + json.dumps(head, ensure_ascii=False).encode()[:-1]
    prefix += b', "choices": [{"index": 0, "delta": {"content": '
    suffix = b'}, "finish_reason": null}]}\n\n'
    role = {"role": "assistant", "content": ""}
    await resp.write(
        _event({**head, "choices": [{"index": 0, "delta": role, "finish_reason": None}]})
    )
    loop = asyncio.get_running_loop()
    start = loop.time() + plan.ttft
    # Wall clock, for benchmarks: content chunk k is due at started_at + ttft + k / tps.
    record["started_at"] = time.time()
    interval = 1.0 / plan.tps if plan.tps > 0 else 0.0
    # How far behind its pace the simulator itself fell (a starved core): a benchmark's lag
    # figures count from the due time, so they must not be blamed on the client.
    record["late_chunks"], record["late_max_s"] = 0, 0.0
    for i, tok in enumerate(plan.tokens):
        if await _fault_at(request, record, plan, i):
            return
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late = loop.time() - due
        if late > _LATE_S:
            record["late_chunks"] += 1
            record["late_max_s"] = max(record["late_max_s"], round(late, 3))
        tok_json = _TOKEN_JSON.get(tok) or json.dumps(tok, ensure_ascii=False).encode()
        if plan.fault.split:
            await _write_split(resp, prefix + tok_json + suffix, len(prefix))
        else:
            await resp.write(prefix + tok_json + suffix)
        record["chunks_sent"] = i + 1
    if await _fault_at(request, record, plan, len(plan.tokens)):
        return
    final = {"index": 0, "delta": {}, "finish_reason": plan.finish}
    await resp.write(_event({**head, "choices": [final]}))
    if plan.include_usage:
        await resp.write(_event({**head, "choices": [], "usage": _usage(plan)}))
    await resp.write(_DONE)
    record["outcome"] = "completed"


async def _stream(request: web.Request, record: dict[str, Any], plan: _Plan) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await resp.prepare(request)
        await _send_events(request, resp, record, plan)
    except ConnectionResetError:
        record["outcome"] = "client_disconnected"
    return resp


async def _complete(request: web.Request, record: dict[str, Any], plan: _Plan) -> web.Response:
    # Without chunks to count, drop and stall faults strike before the response.
    if plan.fault.drop_after is not None:
        _abort(request, record)
        return web.Response()
    if plan.fault.stall_after is not None:
        await _stall(request, record, plan.fault.stall_s)
        return web.Response()
    interval = 1.0 / plan.tps if plan.tps > 0 else 0.0
    await asyncio.sleep(plan.ttft + interval * len(plan.tokens))
    message = {"role": "assistant", "content": "".join(plan.tokens)}
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": plan.finish, "logprobs": None}
        ],
        "usage": _usage(plan),
    }
    record["outcome"] = "completed"
    return web.Response(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    try:
        body: Any = json.loads(await request.read())
    except ValueError:
        body = None
    messages = body.get("messages") if isinstance(body, dict) else None
    fingerprint = _fingerprint(messages)
    record: dict[str, Any] = {
        "fingerprint": fingerprint,
        "model": body.get("model") if isinstance(body, dict) else None,
        "path": request.path,
        "headers": dict(request.headers),
        "body": body,
        "outcome": "streaming",
        "chunks_sent": 0,
    }
    state.log.append(record)
    try:
        plan = _plan(body, state, fingerprint)
    except _BadRequestError as exc:
        return _error(record, 400, str(exc), _Directive())
    if plan.fault.status:
        return _error(record, plan.fault.status, f"simulated {plan.fault.status}", plan.fault)
    try:
        if plan.stream:
            return await _stream(request, record, plan)
        return await _complete(request, record, plan)
    except asyncio.CancelledError:
        # Servers started with handler_cancellation=True cancel us when the client leaves.
        record["outcome"] = "client_disconnected"
        raise


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _requests(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if request.method == "DELETE":
        state.log.clear()
        state.faults.clear()
    return web.json_response(state.log)


def build_app(config: SimulatorConfig) -> web.Application:
    """Build the simulator application; all state lives on the app."""
    app = web.Application()
    app[_STATE] = _State(config)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/chat/completions", _chat)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_delete("/_sim/requests", _requests)
    return app


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
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
    # Short shutdown timeout: stalled streams would otherwise hold shutdown for a minute.
    runner = web.AppRunner(
        build_app(config), handle_signals=False, handler_cancellation=True,
        shutdown_timeout=1.0, access_log=None,
    )  # fmt: skip
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


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="simulate-llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=SimulatorConfig.tokens)
    parser.add_argument("--tokens-per-s", type=float, default=SimulatorConfig.tokens_per_s)
    parser.add_argument("--ttft-s", type=float, default=SimulatorConfig.ttft_s)
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port")
    args = parser.parse_args(argv)
    config = SimulatorConfig(args.tokens, args.tokens_per_s, args.ttft_s)
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


if __name__ == "__main__":
    raise SystemExit(main())
