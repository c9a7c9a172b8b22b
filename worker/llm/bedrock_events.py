"""The lean reader of Bedrock's ConverseStream: AWS event-stream frames, then Converse events.

A frame is a prelude (total and header lengths, CRC32), typed headers, a JSON payload and a
CRC32 of the whole message; `frames` cuts them out of the body with `struct` and checks both
CRCs. Events, by their `:event-type`: `contentBlockStart` (a `toolUse` start: id and name),
`contentBlockDelta` (text, a tool's `input` piece, or `reasoningContent` text, signature or
redacted data), `messageStop` (the stop reason), then `metadata` with the usage. A frame whose
`:message-type` is `exception` (or `error`) is the provider's error mid-stream, raised as the
HTTP status Bedrock gives that exception, so LiteLLM's error class for Bedrock names it.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

from litellm.litellm_core_utils.prompt_templates.reasoning_utils import (
    native_redacted_thinking_data,
)

from worker.errors import StreamBroken
from worker.jobs import Usage
from worker.llm.events import Answered, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from worker.llm.transport import HTTPStatus, as_int, finish_reason

PROVIDER = "bedrock"
_PRELUDE = struct.Struct(">III")
_MAX_FRAME = 16 * 1024 * 1024  # Bedrock's own frames are at most a few MB
# Bedrock's streaming exceptions and the HTTP statuses its API gives them.
_EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "modelTimeoutException": 408,
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
}
# Value lengths of the fixed-size header types (type 6 and 7 carry a 2-byte length).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(raw: bytes) -> dict[str, str]:
    """The string headers of a frame (other types are skipped: Bedrock sends none we need)."""
    out: dict[str, str] = {}
    at, end = 0, len(raw)
    while at < end:
        name_len = raw[at]
        name = raw[at + 1 : at + 1 + name_len].decode()
        kind = raw[at + 1 + name_len]
        at += 2 + name_len
        if kind in (6, 7):
            (length,) = struct.unpack_from(">H", raw, at)
            if kind == 7:
                out[name] = raw[at + 2 : at + 2 + length].decode()
            at += 2 + length
        elif kind in _FIXED:
            at += _FIXED[kind]
        else:
            raise StreamBroken(f"the provider sent an unreadable frame header (type {kind})")
    return out


_KNOWN_HEADERS: dict[bytes, dict[str, str]] = {}  # the few header blocks Bedrock repeats


def _headers_of(raw: bytes) -> dict[str, str]:
    headers = _KNOWN_HEADERS.get(raw)
    if headers is None:
        headers = _headers(raw)
        if len(_KNOWN_HEADERS) < 256:
            _KNOWN_HEADERS[raw] = headers
    return headers


def split_frames(buffer: bytes) -> tuple[list[tuple[dict[str, str], bytes]], bytes]:
    """The whole frames at the start of `buffer` as (headers, payload), CRCs checked, and the
    bytes of an incomplete frame left over. A plain function, called once per read: the hot
    path has no generator of its own for the framing."""
    out: list[tuple[dict[str, str], bytes]] = []
    view = memoryview(buffer)
    at, size = 0, len(buffer)
    while size - at >= 12:
        total, headers_len, prelude_crc = _PRELUDE.unpack_from(buffer, at)
        if total > _MAX_FRAME or total < 16 or zlib.crc32(view[at : at + 8]) != prelude_crc:
            raise StreamBroken("the provider sent a corrupt event-stream frame")
        end = at + total
        if size < end:
            break
        (message_crc,) = struct.unpack_from(">I", buffer, end - 4)
        if zlib.crc32(view[at : end - 4]) != message_crc:
            raise StreamBroken("the provider sent an event-stream frame with a bad CRC")
        body = at + 12 + headers_len
        out.append((_headers_of(buffer[at + 12 : body]), buffer[body : end - 4]))
        at = end
    return out, buffer[at:] if at else buffer


async def frames(pieces: AsyncIterator[bytes]) -> AsyncIterator[tuple[dict[str, str], bytes]]:
    """(headers, payload) for each event-stream frame of the body, CRCs checked."""
    buffer = b""
    async for piece in pieces:
        found, buffer = split_frames(buffer + piece if buffer else piece)
        for frame in found:
            yield frame
    if buffer:
        raise StreamBroken("the provider's stream broke off inside a frame")


class _Blocks:
    """Which content block is which tool call, and the reasoning that thinking blocks repeat."""

    def __init__(self) -> None:
        self.tools: dict[int, int] = {}  # contentBlockIndex -> tool-call index
        self.thinking: list[str] = []
        self.signature: str | None = None
        self.thinking_blocks: list[dict[str, Any]] = []

    def close_thinking(self) -> None:
        if self.thinking or self.signature:
            block = {"type": "thinking", "thinking": "".join(self.thinking)}
            self.thinking_blocks.append({**block, "signature": self.signature})
            self.thinking, self.signature = [], None


async def bedrock_events(pieces: AsyncIterator[bytes], *, model: str) -> AsyncIterator[StreamEvent]:
    """The events of one ConverseStream body, ending with `Answered` (deployment unnamed)."""
    loads = json.loads
    blocks = _Blocks()
    ended: str | None = None
    usage: Usage | None = None
    buffer = b""
    async for piece in pieces:
        found, buffer = split_frames(buffer + piece if buffer else piece)
        for headers, payload in found:
            kind = headers.get(":event-type")
            if kind == "contentBlockDelta":
                body = loads(payload)
                delta = body.get("delta") or {}
                text = delta.get("text")
                if text:
                    yield TextDelta(text)
                elif (event := _delta(blocks, body, delta)) is not None:
                    yield event
            elif headers.get(":message-type", "event") != "event":
                raise _exception(headers, payload)
            elif kind == "messageStop":
                blocks.close_thinking()
                ended = finish_reason(str(loads(payload).get("stopReason") or "end_turn"))
            elif kind == "metadata":
                usage = bedrock_usage(loads(payload).get("usage") or {})
            elif (event := _block_event(blocks, kind, payload)) is not None:
                yield event
    if buffer:
        raise StreamBroken("the provider's stream broke off inside a frame")
    if ended is None:
        raise StreamBroken("the provider's stream ended without a stop reason")
    yield Answered(
        model=model,
        provider=PROVIDER,
        finish_reason=ended,
        usage=usage,
        cost_usd=None,
        deployment="",
        model_id=None,
        thinking_blocks=tuple(blocks.thinking_blocks),
    )


def _block_event(blocks: _Blocks, kind: str | None, payload: bytes) -> StreamEvent | None:
    """A block's start (a tool call's id and name) or its end (a thinking block complete)."""
    if kind == "contentBlockStart":
        body = json.loads(payload)
        start = (body.get("start") or {}).get("toolUse")
        if start:
            index = blocks.tools[int(body.get("contentBlockIndex") or 0)] = len(blocks.tools)
            return ToolCallDelta(index=index, id=start.get("toolUseId"), name=start.get("name"))
    elif kind == "contentBlockStop":
        blocks.close_thinking()
    return None


def _delta(blocks: _Blocks, body: dict[str, Any], delta: dict[str, Any]) -> StreamEvent | None:
    tool = delta.get("toolUse")
    if tool is not None:
        index = blocks.tools.get(int(body.get("contentBlockIndex") or 0), 0)
        return ToolCallDelta(index=index, arguments=str(tool.get("input") or ""))
    reasoning = delta.get("reasoningContent")
    if reasoning is None:
        return None
    if reasoning.get("signature"):
        blocks.signature = str(reasoning["signature"])
    if reasoning.get("redactedContent"):
        blocks.close_thinking()
        # LiteLLM's own unwrapping of Converse's base64 (it wraps it again when sent back).
        data = native_redacted_thinking_data(str(reasoning["redactedContent"]))
        blocks.thinking_blocks.append({"type": "redacted_thinking", "data": data})
    text = reasoning.get("text")
    if text:
        blocks.thinking.append(text)
        return ReasoningDelta(text)
    return None


def _exception(headers: dict[str, str], payload: bytes) -> HTTPStatus:
    kind = headers.get(":exception-type") or headers.get(":error-code") or "internalServerException"
    status = _EXCEPTION_STATUS.get(kind[:1].lower() + kind[1:], 500)
    try:
        message = str(json.loads(payload).get("message") or kind)
    except (ValueError, AttributeError):
        message = headers.get(":error-message") or kind
    return HTTPStatus(status, json.dumps({"message": message, "type": kind}), {})


def bedrock_usage(usage: dict[str, Any]) -> Usage | None:
    prompt = as_int(usage.get("inputTokens"))
    completion = as_int(usage.get("outputTokens"))
    if prompt is None and completion is None:
        return None
    cached = as_int(usage.get("cacheReadInputTokens"))
    written = as_int(usage.get("cacheWriteInputTokens"))
    # Converse counts cache reads and writes outside inputTokens; OpenAI's prompt_tokens has them.
    return Usage(
        prompt_tokens=(prompt or 0) + (cached or 0) + (written or 0),
        completion_tokens=completion or 0,
        cached_tokens=cached,
    )
