"""What every fake provider shares: a server on a free port, a request log, scripted faults.

A directive in the prompt scripts a fault, as the simulator's do:
`[[fake status=429 retry_after=0.2 times=1]]`, `[[fake break_after=3]]`,
`[[fake tokens=20 tps=20]]`; `only=<fake name>` limits it to one fake (fallback tests).
`times=N` makes the fault strike the first N requests for that prompt only.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from worker.simulator import answer_tokens

DEFAULT_TOKENS = 24
_DIRECTIVE = re.compile(r"\[\[fake((?:\s+\w+=[^\s\]]*)*)\s*\]\]")


def answer_for(prompt: str, tokens: int = DEFAULT_TOKENS) -> list[str]:
    """The tokens every fake streams for `prompt`: varied, and always ending in 3- and 4-byte
    UTF-8 characters, so that every answer tests multi-byte handling."""
    answer = answer_tokens([{"role": "user", "content": prompt}], tokens)
    return [*answer[:-1], " 日本語🚀"] if answer else answer


def expected_answer(prompt: str, tokens: int = DEFAULT_TOKENS) -> str:
    """The text every fake streams for `prompt` (when nothing cuts it short)."""
    return "".join(answer_for(prompt, tokens))


def prompt_tokens(prompt: str) -> int:
    """The prompt token count every fake reports (words, so tests can predict it)."""
    return max(1, len(prompt.split()))


@dataclass(frozen=True)
class Directive:
    status: int | None = None
    retry_after: float = 0.2
    break_after: int | None = None
    times: int | None = None
    tokens: int = DEFAULT_TOKENS
    tps: float = 0.0
    only: str | None = None

    @property
    def is_fault(self) -> bool:
        return self.status is not None or self.break_after is not None


_PARSERS: dict[str, Callable[[str], object]] = {
    "status": int, "retry_after": float, "break_after": int, "times": int,
    "tokens": int, "tps": float, "only": str,
}  # fmt: skip


def parse_directive(prompt: str, fake: str) -> Directive:
    values: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(prompt):
        for pair in match.group(1).split():
            key, _, raw = pair.partition("=")
            values[key] = _PARSERS[key](raw)
    directive = Directive(**values)
    if directive.only is not None and directive.only != fake:
        return Directive(tokens=directive.tokens, tps=directive.tps)
    return directive


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    prompt: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def wire(self) -> str:
        """Everything that reached the fake, as one string, for "did X leak" checks."""
        return json.dumps([self.raw_path, self.query, self.headers, self.body], ensure_ascii=False)


@dataclass(frozen=True)
class Answer:
    """What one request is answered with (before any scripted break)."""

    model: str
    tokens: list[str]
    prompt_tokens: int
    truncated: bool
    body: dict[str, Any]

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


class FakeProvider(ABC):
    """An aiohttp server speaking one provider's streaming wire format, run in-process."""

    name: ClassVar[str]
    content_type: ClassVar[str] = "text/event-stream"

    def __init__(self, *, key: str, model_version: str) -> None:
        self.key = key
        self.model_version = model_version
        self.received: list[Received] = []
        self.active = 0
        self.max_active = 0
        self._faults_seen: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- what each provider defines ------------------------------------------------------

    @abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None: ...

    @abstractmethod
    def prompt_of(self, body: dict[str, Any]) -> str:
        """The last user message's text, from the provider's request format."""

    @abstractmethod
    def max_tokens_of(self, body: dict[str, Any]) -> int | None: ...

    @abstractmethod
    def authorized(self, request: web.Request) -> bool: ...

    @abstractmethod
    def auth_failure(self, request: web.Request) -> web.Response:
        """The provider's real answer to a wrong key."""

    @abstractmethod
    def error(self, status: int, retry_after: float) -> web.Response: ...

    @abstractmethod
    def opening(self, answer: Answer) -> list[bytes]: ...

    @abstractmethod
    def delta(self, answer: Answer, token: str) -> bytes: ...

    @abstractmethod
    def closing(self, answer: Answer) -> list[bytes]: ...

    # -- shared --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        self.add_routes(app.router)
        # Handlers are cancelled when the client hangs up, as a real server's would be.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def requests_for(self, prompt: str) -> list[Received]:
        return [received for received in self.received if received.prompt == prompt]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        prompt = self.prompt_of(body)
        self.received.append(
            Received(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path.split("?", 1)[0],
                query=dict(request.query),
                headers={name.lower(): value for name, value in request.headers.items()},
                body=body,
                prompt=prompt,
            )
        )
        if not self.authorized(request):
            return self.auth_failure(request)
        directive = parse_directive(prompt, self.name)
        if directive.is_fault:
            self._faults_seen[prompt] += 1
            if directive.times is not None and self._faults_seen[prompt] > directive.times:
                directive = Directive(tokens=directive.tokens, tps=directive.tps)
        if directive.status is not None:
            return self.error(directive.status, directive.retry_after)
        return await self._stream(request, self._answer(body, prompt, directive), directive)

    def reported_model(self, body: dict[str, Any]) -> str:
        """The model name the provider puts in its answer."""
        return self.model_version

    def _answer(self, body: dict[str, Any], prompt: str, directive: Directive) -> Answer:
        tokens = answer_for(prompt, directive.tokens)
        limit = self.max_tokens_of(body)
        truncated = limit is not None and limit < len(tokens)
        return Answer(
            model=self.reported_model(body),
            tokens=tokens[:limit] if truncated else tokens,
            prompt_tokens=prompt_tokens(prompt),
            truncated=truncated,
            body=body,
        )

    async def _stream(
        self, request: web.Request, answer: Answer, directive: Directive
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        await response.prepare(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        interval = 1 / directive.tps if directive.tps else 0.0
        try:
            for event in self.opening(answer):
                await response.write(event)
            for index, token in enumerate(answer.tokens):
                if directive.break_after == index:
                    # The connection drops mid-body, as when a provider's edge resets it.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if interval:
                    await asyncio.sleep(interval)
                await response.write(self.delta(answer, token))
            for event in self.closing(answer):
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self.active -= 1
        return response


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"
