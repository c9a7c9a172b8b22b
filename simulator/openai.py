"""OpenAI's and Azure OpenAI's chat completions: SSE chunks, each route with its own key header.

OpenAI: `POST /v1/chat/completions` (also `/chat/completions`), `Authorization: Bearer`.
Azure: `POST /openai/deployments/{deployment}/chat/completions?api-version=...`, `api-key`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import (
    TOKEN_JSON,
    Answer,
    Event,
    Reasoning,
    Refusal,
    Text,
    ToolArguments,
    ToolCallStart,
    openai_conversation,
)
from simulator.rich import Shape, openai_tools
from simulator.script import Directive
from simulator.wire import ChatRequest, Renderer, RequestError, WireFormat, positive_int, sse

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
# OpenAI answers an alias with the snapshot that served it.
SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
_DONE = b"data: [DONE]\n\n"
# What Azure's filter says of an answer it stopped (its four categories, one flagged).
FILTERED_RESULTS = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "high"},
}


def _error_body(status: int, message: str, kind: str, code: str | None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": code}}, status=status
    )


class ChunkRenderer(Renderer):
    """`chat.completion.chunk` events, the content ones from byte templates (the hot path)."""

    def __init__(
        self, answer: Answer, *, include_usage: bool, choice_extra: dict[str, Any] | None = None
    ) -> None:
        self._answer = answer
        self._include_usage = include_usage
        self._extra = choice_extra or {}
        self._head: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": answer.model,
        }
        # Each content chunk is prefix + the token's JSON + suffix; reasoning and argument
        # pieces, as frequent in rich answers, are templated the same way around their delta.
        self._delta_prefix = b"data: " + json.dumps(self._head, ensure_ascii=False).encode()[:-1]
        self._delta_prefix += b', "choices": [{"index": 0, "delta": '
        self._prefix = self._delta_prefix + b'{"content": '
        extra = json.dumps(self._extra).encode()[1:-1]
        self._choice_suffix = b', "finish_reason": null' + (b", " + extra if extra else b"")
        self._choice_suffix += b"}]}\n\n"
        self._suffix = b"}" + self._choice_suffix
        self._reasoning_key = b'{"' + answer.reasoning_field.encode() + b'": '

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({**self._head, "choices": choices, **extra})

    def _choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish, **self._extra}

    def opening(self) -> Sequence[bytes]:
        return [self._chunk([self._choice({"role": "assistant", "content": ""}, None)])]

    def event(self, event: Event) -> bytes:
        if isinstance(event, Text):
            token = (
                TOKEN_JSON.get(event.text) or json.dumps(event.text, ensure_ascii=False).encode()
            )
            return self._prefix + token + self._suffix
        if isinstance(event, Reasoning):
            delta = self._reasoning_key + _json(event.text) + b"}"
        elif isinstance(event, Refusal):
            delta = b'{"refusal": ' + _json(event.text) + b"}"
        elif isinstance(event, ToolArguments):
            head = b'{"tool_calls": [{"index": %d, "function": {"arguments": ' % event.index
            delta = head + _json(event.piece) + b"}}]}"
        elif isinstance(event, ToolCallStart):
            return self._chunk([self._choice(_tool_call_start(event), None)])
        else:
            raise TypeError(f"no OpenAI rendering for {event!r}")
        return self._delta_prefix + delta + self._choice_suffix

    def _finish_choice(self) -> dict[str, Any]:
        return self._choice({}, self._answer.finish)

    def closing(self) -> Sequence[bytes]:
        events = [self._chunk([self._finish_choice()])]
        if self._include_usage:
            events.append(self._chunk([], usage=usage(self._answer)))
        return [*events, _DONE]


def _json(text: str) -> bytes:
    return TOKEN_JSON.get(text) or json.dumps(text, ensure_ascii=False).encode()


def _tool_call_start(event: ToolCallStart) -> dict[str, Any]:
    """A tool call's first fragment: its id and name, and empty arguments, as OpenAI sends."""
    function = {"name": event.call.name, "arguments": ""}
    call = {"index": event.index, "id": event.call.id, "type": "function", "function": function}
    return {"tool_calls": [call]}


def usage(answer: Answer) -> dict[str, Any]:
    """OpenAI's usage; the token details only when the answer reasoned or read the cache."""
    result: dict[str, Any] = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    if answer.reasoning_tokens or answer.cached_tokens:
        result["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens, "audio_tokens": 0}
        result["completion_tokens_details"] = {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return result


def _message(answer: Answer) -> dict[str, Any]:
    """The whole answer as an OpenAI assistant message (for requests that do not stream)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    refusal = "".join(event.text for event in answer.events if isinstance(event, Refusal))
    reasoning = "".join(event.text for event in answer.events if isinstance(event, Reasoning))
    calls = [event.call for event in answer.events if isinstance(event, ToolCallStart)]
    if not (refusal or calls):
        message["content"] = answer.text
    if refusal:
        message["refusal"] = refusal
    if reasoning:
        message[answer.reasoning_field] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


class OpenAIFormat(WireFormat):
    """OpenAI's chat completions, streamed or whole."""

    provider: ClassVar[str] = "openai"
    routes: ClassVar[tuple[str, ...]] = ("/v1/chat/completions", "/chat/completions")

    def read(self, request: web.Request, body: Any) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise RequestError("request body must be a JSON object with a 'messages' list")
        options = body.get("stream_options")
        return ChatRequest(
            model=self.requested_model(request, body),
            conversation=openai_conversation(body["messages"]),
            max_tokens=positive_int(
                body.get("max_completion_tokens", body.get("max_tokens")), "max_tokens"
            ),
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            tools=openai_tools(body.get("tools")),
        )

    def requested_model(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body.get("model") or "sim-model")

    def refusal(self, request: web.Request) -> web.Response | None:
        key = self.config.openai_key
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key is None or given == key:
            return None
        # OpenAI names the key it was given in this message: the worker must mask it.
        message = f"Incorrect API key provided: {given}. You can find your API key at ..."
        return _error_body(401, message, "invalid_request_error", "invalid_api_key")

    def error(
        self, status: int, message: str, *, code: str | None = None, retry_after_s: float = 1.0
    ) -> web.Response:
        kind, usual = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "api_error", None)
        )
        response = _error_body(status, message, kind, code or usual)
        if status == 429:
            response.headers["Retry-After"] = f"{retry_after_s:g}"
        return response

    def reported_model(self, chat: ChatRequest) -> str:
        return SNAPSHOTS.get(chat.model, chat.model)

    def renderer(self, chat: ChatRequest, answer: Answer) -> Renderer:
        return ChunkRenderer(answer, include_usage=chat.include_usage)

    def complete(self, chat: ChatRequest, answer: Answer) -> web.Response:
        message = _message(answer)
        choice = {"index": 0, "message": message, "finish_reason": answer.finish, "logprobs": None}
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [choice],
            "usage": usage(answer),
        }
        return web.Response(
            text=json.dumps(body, ensure_ascii=False), content_type="application/json"
        )


class AzureFormat(OpenAIFormat):
    """Azure OpenAI: OpenAI's chunks with content-filter verdicts, on a deployment's path."""

    provider: ClassVar[str] = "azure"
    routes: ClassVar[tuple[str, ...]] = ("/openai/deployments/{deployment}/chat/completions",)

    def requested_model(self, request: web.Request, body: dict[str, Any]) -> str:
        return request.match_info["deployment"]

    def refusal(self, request: web.Request) -> web.Response | None:
        if "api-version" not in request.query:
            # What Azure answers a request without its api-version.
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        key = self.config.azure_key
        if key is None or request.headers.get("api-key") == key:
            return None
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
            " provide a valid key for an active subscription and use a correct regional API"
            " endpoint for your resource."
        )
        return web.json_response({"error": {"code": "401", "message": message}}, status=401)

    def reported_model(self, chat: ChatRequest) -> str:
        return self.config.azure_model

    def shape(self, chat: ChatRequest, directive: Directive) -> Shape:
        # Azure serves OpenAI's own models, which stream no reasoning text.
        return super().shape(
            chat, replace(directive, reasoning_style=directive.reasoning_style or "hidden")
        )

    def renderer(self, chat: ChatRequest, answer: Answer) -> Renderer:
        return _AzureRenderer(
            answer, include_usage=chat.include_usage, choice_extra={"content_filter_results": {}}
        )


class _AzureRenderer(ChunkRenderer):
    def opening(self) -> Sequence[bytes]:
        # Azure's first event has no choices, only the prompt's content-filter verdict.
        first = sse(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            }
        )
        return [first, *super().opening()]

    def _finish_choice(self) -> dict[str, Any]:
        choice = super()._finish_choice()
        if self._answer.finish == "content_filter":
            choice["content_filter_results"] = FILTERED_RESULTS
        return choice
