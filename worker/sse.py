"""Reading an OpenAI-format chat completion stream (server-sent events) over aiohttp.

The hot path of the worker: one `data:` line per chunk, decoded with `json.loads` and
nothing else. LiteLLM builds the request and names the errors (worker/llm.py); this module
only moves bytes, so it stays within a few microseconds of a bare client per chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp


class HTTPStatusError(Exception):
    """The server answered with an error status before streaming."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers)


class StreamCut(Exception):
    """The connection broke while the stream was being read."""


def new_session() -> aiohttp.ClientSession:
    # No pool limit (the worker's concurrency bounds the streams) and no total timeout (the
    # job's first-token, stall and total timeouts govern); only connecting is bounded here.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, connect=30),
    )


async def stream_chunks(
    session: aiohttp.ClientSession, url: str, *, headers: Mapping[str, str], body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """POST `body` and yield each decoded `data:` chunk until `[DONE]` or the end of the body.

    Closing the generator (or cancelling its reader) closes the connection, which is how the
    provider learns to stop generating.
    """
    try:
        response = await session.post(url, json=body, headers=headers)
    except aiohttp.ClientError as error:
        raise ConnectionError(f"cannot reach the provider: {type(error).__name__}") from None
    complete = False
    try:
        if response.status >= 400:
            text = await response.text(errors="replace")
            raise HTTPStatusError(response.status, text, response.headers)
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            yield json.loads(payload)
        complete = True
    except aiohttp.ClientError as error:
        raise StreamCut(f"the stream broke off: {type(error).__name__}") from None
    finally:
        # A finished stream gives its connection back for reuse; anything else (an error,
        # a cancelled job) closes it so that the provider stops generating.
        if complete:
            response.release()
        else:
            response.close()
