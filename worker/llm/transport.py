"""The bytes of a lean stream: one aiohttp session, a POST, and the framing shared by readers.

What every lean reader needs and nothing provider-specific: opening the request (an error
status becomes `HTTPStatus`, a connection that cannot be made `ConnectionError`), reading a
body as server-sent events without aiohttp's line-length limit, and LiteLLM's own finish-reason
names. The provider's meaning of the bytes lives in each reader module.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
from litellm.litellm_core_utils.core_helpers import map_finish_reason

from worker.errors import StreamBroken
from worker.llm.events import FINISH_REASONS


class HTTPStatus(Exception):
    """The provider answered with an error status before streaming."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers)


def new_session() -> aiohttp.ClientSession:
    # No pool limit (the worker's concurrency bounds the streams) and no total timeout (the
    # job's first-token, stall and total timeouts govern); only connecting is bounded here.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, connect=30),
    )


@contextlib.asynccontextmanager
async def _response(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], data: bytes
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The POST's response, streaming. An error status raises `HTTPStatus`; a body read to its
    end gives the connection back, anything else (an error, a cancelled job, a generator closed
    early) closes it, which is how the provider learns to stop generating."""
    try:
        response = await session.post(url, data=data, headers=headers)
    except aiohttp.ClientError as error:
        raise ConnectionError(f"cannot reach the provider: {type(error).__name__}") from None
    complete = False
    try:
        if response.status >= 400:
            text = await response.text(errors="replace")
            raise HTTPStatus(response.status, text, response.headers)
        yield response
        complete = True
    except aiohttp.ClientError as error:
        raise StreamBroken(f"the stream broke off: {type(error).__name__}") from None
    finally:
        if complete:
            response.release()
        else:
            response.close()


async def body_chunks(
    session: aiohttp.ClientSession, url: str, *, headers: Mapping[str, str], data: bytes
) -> AsyncIterator[bytes]:
    """POST `data` and yield the response body as it arrives, in whatever pieces it comes."""
    async with _response(session, url, headers, data) as response:
        async for piece in response.content.iter_any():
            yield piece


async def sse_stream(
    session: aiohttp.ClientSession, url: str, *, headers: Mapping[str, str], data: bytes
) -> AsyncIterator[bytes]:
    """POST `data` and yield the payload of each `data:` line of the answer, until `[DONE]`.

    (`sse_data` under `_response`: the layer between them costs ~0.1 µs a chunk, measured.)
    """
    async with (
        _response(session, url, headers, data) as response,
        contextlib.aclosing(sse_data(response.content.iter_any())) as payloads,
    ):
        async for payload in payloads:
            yield payload


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The payload of each `data:` line of a server-sent-event body, until `[DONE]`.

    Lines are split here rather than by aiohttp, whose line reader raises `LineTooLong` past
    ~512 KiB (a Gemini event carrying inline media). A paced stream brings one whole event
    per read, so the common case is a `split` with nothing left over.
    """
    pending = b""
    async for piece in pieces:
        lines = (pending + piece if pending else piece).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield payload
    if pending.startswith(b"data:") and (payload := pending[5:].strip()) not in (b"", b"[DONE]"):
        yield payload


def finish_reason(raw: str) -> str:
    """A provider's finish reason in the contract's words, by LiteLLM's own table."""
    mapped = str(map_finish_reason(raw))
    if mapped == "function_call":
        return "tool_calls"
    return mapped if mapped in FINISH_REASONS else "stop"


def as_int(value: Any) -> int | None:
    """A token count from a usage field, or None where it is absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)
