"""Bytes as each provider sends them, built from the providers' documented formats, and a
helper that collects a reader's events."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from worker.llm.events import StreamEvent


def sse(*payloads: dict[str, Any], end: bytes = b"\n\n", done: bool = True) -> list[bytes]:
    """One `data:` event per payload (then `[DONE]`), one read each, as a paced stream."""
    events = [b"data: " + json.dumps(p, ensure_ascii=False).encode() + end for p in payloads]
    return [*events, b"data: [DONE]\n\n"] if done else events


async def pieces(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", 7, len(raw_value))
        + raw_value
    )


def frame(headers: dict[str, str], payload: dict[str, Any] | bytes) -> bytes:
    """One AWS event-stream message: prelude + CRC, string headers, payload, message CRC."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(raw_headers) + len(body) + 4, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return frame(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def exception(kind: str, message: str) -> bytes:
    return frame(
        {
            ":exception-type": kind,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        {"message": message},
    )
