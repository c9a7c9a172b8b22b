"""Sending an answer: paced chunks, and the scripted faults (drop, stall, split writes).

Shared by every wire format: the format renders bytes, this module decides when they leave
and when the connection breaks, and keeps the request's record up to date.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simulator.answers import Answer, Reasoning, Refusal, Text
from simulator.log import RequestLog
from simulator.script import Directive
from simulator.wire import Renderer

_SPLIT_GAP_S = 0.005  # lets the first piece leave as its own TCP segment
_DISCONNECT_POLL_S = 0.05
_LATE_S = 0.05  # a chunk sent this much after its due time counts as late


@dataclass(frozen=True)
class Plan:
    """An answer and how to send it: its pace and the fault the directive scripted."""

    answer: Answer
    tps: float
    ttft_s: float
    fault: Directive
    # Thinking time: the first think_count events (reasoning) are spread over think_s, and
    # the rest start after it, at the answer's pace.
    think_s: float = 0.0
    think_count: int = 0

    @property
    def interval_s(self) -> float:
        return 1.0 / self.tps if self.tps > 0 else 0.0


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


async def _fault_at(request: web.Request, record: dict[str, Any], plan: Plan, sent: int) -> bool:
    """Strike the scripted fault if it is due after `sent` chunks; True if the stream ends."""
    if plan.fault.drop_after == sent:
        _abort(request, record)
        return True
    if plan.fault.stall_after == sent:
        await _stall(request, record, plan.fault.stall_s)
        return True
    return False


def _split_point(chunk: bytes, event: object) -> int:
    """Just after the first byte of the event's first multi-byte character, else the end."""
    if not isinstance(event, Text | Reasoning | Refusal):
        return len(chunk)
    raw = event.text.encode()
    first = next((i for i, byte in enumerate(raw) if byte >= 0x80), None)
    at = chunk.find(raw) if first is not None else -1
    return len(chunk) if at < 0 or first is None else at + first + 1


async def _write_split(resp: web.StreamResponse, chunk: bytes, cut: int) -> None:
    if cut >= len(chunk):
        await resp.write(chunk)
        return
    await resp.write(chunk[:cut])
    await asyncio.sleep(_SPLIT_GAP_S)
    await resp.write(chunk[cut:])


async def _send_events(
    request: web.Request,
    resp: web.StreamResponse,
    record: dict[str, Any],
    plan: Plan,
    renderer: Renderer,
) -> None:
    for opening in renderer.opening():
        await resp.write(opening)
    loop = asyncio.get_running_loop()
    start = loop.time() + plan.ttft_s
    # Wall clock, for benchmarks: content chunk k is due at started_at + ttft + k / tps
    # (answers that think: reasoning spread over think_s, the rest think_s later).
    record["started_at"] = time.time()
    if plan.think_s:
        record["think_s"], record["think_count"] = plan.think_s, plan.think_count
    interval = plan.interval_s
    think_count = plan.think_count
    think_gap = plan.think_s / think_count if think_count else 0.0
    # The first answer event is due think_s after the start, whatever the reasoning before.
    answer_start = start + plan.think_s - think_count * interval
    # How far behind its pace the simulator itself fell (a starved core): a benchmark's lag
    # figures count from the due time, so they must not be blamed on the client.
    record["late_chunks"], record["late_max_s"] = 0, 0.0
    for index, event in enumerate(plan.answer.events):
        if await _fault_at(request, record, plan, index):
            return
        due = start + index * think_gap if index < think_count else answer_start + index * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late = loop.time() - due
        if late > _LATE_S:
            record["late_chunks"] += 1
            record["late_max_s"] = max(record["late_max_s"], round(late, 3))
        chunk = renderer.event(event)
        if plan.fault.split:
            await _write_split(resp, chunk, _split_point(chunk, event))
        else:
            await resp.write(chunk)
        record["chunks_sent"] = index + 1
    if await _fault_at(request, record, plan, len(plan.answer.events)):
        return
    for closing in renderer.closing():
        await resp.write(closing)
    record["outcome"] = "completed"


async def send_stream(
    request: web.Request,
    record: dict[str, Any],
    plan: Plan,
    renderer: Renderer,
    *,
    content_type: str,
    log: RequestLog,
) -> web.StreamResponse:
    """Stream the plan's answer, paced, with its fault; the record follows what happened."""
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    provider = record["provider"]
    log.stream_started(provider)
    try:
        await resp.prepare(request)
        await _send_events(request, resp, record, plan, renderer)
    except ConnectionResetError:
        record["outcome"] = "client_disconnected"
    finally:
        log.stream_ended(provider)
    return resp


async def send_whole(
    request: web.Request, record: dict[str, Any], plan: Plan, response: web.Response
) -> web.Response:
    """Send a non-streamed answer once it would have finished streaming."""
    # Without chunks to count, drop and stall faults strike before the response.
    if plan.fault.drop_after is not None:
        _abort(request, record)
        return web.Response()
    if plan.fault.stall_after is not None:
        await _stall(request, record, plan.fault.stall_s)
        return web.Response()
    events = len(plan.answer.events) - plan.think_count
    await asyncio.sleep(plan.ttft_s + plan.think_s + plan.interval_s * events)
    record["outcome"] = "completed"
    return response
