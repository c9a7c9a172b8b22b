"""What a provider's wire format defines: its routes, how it reads a request, refuses a key,
words an error and renders an answer's events. One subclass per format; the server and the
streaming loop are shared.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import Answer, Conversation, Event
from simulator.config import SimulatorConfig
from simulator.rich import Shape, Tool
from simulator.script import Directive


class RequestError(Exception):
    """A request the simulator cannot answer; sent back as a 400 in the provider's format."""


@dataclass(frozen=True)
class ChatRequest:
    """One request, read from any provider's format."""

    model: str  # as the request names it: the body's model, the deployment, the path's model
    conversation: Conversation
    max_tokens: int | None
    stream: bool = True
    include_usage: bool = True
    tools: tuple[Tool, ...] = ()  # the tools the request defines, for `tools=` calls
    include_thoughts: bool = False  # Gemini's thinkingConfig.includeThoughts
    response_fields: tuple[str, ...] = ()  # Bedrock's additionalModelResponseFieldPaths


class Renderer(ABC):
    """Renders one answer as one stream's bytes: opening events, one per event, closing."""

    def opening(self) -> Sequence[bytes]:
        return ()

    @abstractmethod
    def event(self, event: Event) -> bytes: ...

    @abstractmethod
    def closing(self) -> Sequence[bytes]: ...


class WireFormat(ABC):
    """One provider's HTTP API, as far as streaming chat goes."""

    provider: ClassVar[str]  # the name `only=` and the request log use
    content_type: ClassVar[str] = "text/event-stream"
    routes: ClassVar[tuple[str, ...]]  # POST paths, aiohttp patterns

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config

    @abstractmethod
    def read(self, request: web.Request, body: Any) -> ChatRequest:
        """The request in the provider's format; raises RequestError."""

    @abstractmethod
    def refusal(self, request: web.Request) -> web.Response | None:
        """The provider's real answer to credentials it does not accept, or None."""

    @abstractmethod
    def error(
        self, status: int, message: str, *, code: str | None = None, retry_after_s: float = 1.0
    ) -> web.Response:
        """An error as the provider words it (`code` overrides its usual code)."""

    def reported_model(self, chat: ChatRequest) -> str:
        """The model name the provider puts in its answer."""
        return chat.model

    def shape(self, chat: ChatRequest, directive: Directive) -> Shape:
        """What this format shows of a rich answer (OpenAI-compatible servers' by default)."""
        style = directive.reasoning_style or "reasoning_content"
        return Shape(
            provider=self.provider,
            show_reasoning=style != "hidden",
            reasoning_field=style,
            interleave=bool(directive.interleave),
        )

    @abstractmethod
    def renderer(self, chat: ChatRequest, answer: Answer) -> Renderer: ...

    def complete(self, chat: ChatRequest, answer: Answer) -> web.Response:
        """The whole answer in one response, for a request that did not ask to stream."""
        raise RequestError(f"{self.provider} requests are streamed only")


def sse(payload: dict[str, Any], *, end: bytes = b"\n\n") -> bytes:
    """One server-sent event carrying `payload` as JSON (UTF-8, not escaped)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + end


def as_dict(value: object) -> dict[str, Any]:
    """A request body's object field, or an empty one when it is absent or not an object."""
    return value if isinstance(value, dict) else {}


def positive_int(value: object, what: str) -> int | None:
    """An optional positive integer from a request body; raises RequestError if it is not."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{what} must be a positive integer")
    return value
