"""AWS Bedrock ConverseStream: `POST /model/{model id}/converse-stream`, SigV4-signed; answers
in AWS event-stream framing (prelude with lengths and CRC, string headers, JSON, message CRC).

The signature itself is not verified (the simulator knows no secret key); the credential
scope is, against the access key id and region the server is configured with.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import (
    Answer,
    Conversation,
    Event,
    Message,
    Reasoning,
    RedactedReasoning,
    Refusal,
    Text,
    ToolArguments,
    ToolCallStart,
    parts_text,
)
from simulator.rich import Shape, Tool
from simulator.script import Directive
from simulator.wire import ChatRequest, Renderer, RequestError, WireFormat, as_dict, positive_int

_CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key_id>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)"
    r"/bedrock/aws4_request, SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$"
)
_ERROR_TYPES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_FILTER_REASONS = ("guardrail_intervened", "content_filtered")
# What LiteLLM asks for to learn Claude's thinking tokens (Converse's usage leaves them out).
THINKING_USAGE_PATH = "/usage/output_tokens_details"
_STRING = 7  # event-stream header value type


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", _STRING, len(raw_value))
        + raw_value
    )


def event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One event-stream message: prelude (lengths + CRC), headers, JSON payload, message CRC."""
    headers = (
        _header(":event-type", event_type)
        + _header(":content-type", "application/json")
        + _header(":message-type", "event")
    )
    body = json.dumps(payload, ensure_ascii=False).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def credential_scope(authorization: str | None) -> dict[str, str] | None:
    """The key id, date and region of a SigV4 `Authorization` header, if it is one."""
    match = _CREDENTIAL.match(authorization or "")
    return None if match is None else match.groupdict()


def _conversation(body: dict[str, Any]) -> Conversation:
    messages = []
    if text := parts_text(body.get("system")):
        messages.append(Message("system", text))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            messages.append(
                Message(str(message.get("role", "user")), parts_text(message.get("content")))
            )
    return tuple(messages)


def _tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """The request's `toolConfig.tools[].toolSpec`, names and input schemas."""
    found = []
    for tool in as_dict(body.get("toolConfig")).get("tools") or []:
        spec = as_dict(as_dict(tool).get("toolSpec"))
        if isinstance(spec.get("name"), str):
            found.append(Tool(spec["name"], as_dict(as_dict(spec.get("inputSchema")).get("json"))))
    return tuple(found)


class EventStreamRenderer(Renderer):
    """messageStart; content blocks (reasoning, text, tool use), each its deltas then its
    contentBlockStop; messageStop with the stop reason; usage in the metadata event."""

    def __init__(self, answer: Answer, *, thinking_usage: bool = False) -> None:
        self._answer = answer
        self._thinking_usage = thinking_usage
        self._block = 0  # the index of the block the next delta belongs to
        self._kind: type[Event] | None = None  # what that block holds, once it is open

    def opening(self) -> Sequence[bytes]:
        return [event_message("messageStart", {"p": "abcdefghijk", "role": "assistant"})]

    def _stop(self) -> bytes:
        return event_message("contentBlockStop", {"contentBlockIndex": self._block, "p": "abcd"})

    def _enter(self, kind: type[Event], *, new: bool = False) -> bytes:
        """The stop of the open block if this event starts another; b"" if it continues it."""
        if self._kind is kind and not new:
            return b""
        stop = b""
        if self._kind is not None:
            stop = self._stop()
            self._block += 1
        self._kind = kind
        return stop

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"contentBlockIndex": self._block, "delta": delta, "p": "abcd"}
        return event_message("contentBlockDelta", payload)

    def event(self, event: Event) -> bytes:
        if isinstance(event, Text):
            if self._kind is not Text:
                return self._enter(Text) + self._delta({"text": event.text})
            payload = {"contentBlockIndex": self._block, "delta": {"text": event.text}, "p": "abcd"}
            return event_message("contentBlockDelta", payload)
        return self._rich(event)

    def _rich(self, event: Event) -> bytes:
        if isinstance(event, Reasoning):
            out = self._enter(Reasoning) + self._delta({"reasoningContent": {"text": event.text}})
            if event.signature is not None:
                out += self._delta({"reasoningContent": {"signature": event.signature}})
            return out
        if isinstance(event, RedactedReasoning):
            redacted = {"redactedContent": base64.b64encode(event.data).decode()}
            return self._enter(RedactedReasoning, new=True) + self._delta(
                {"reasoningContent": redacted}
            )
        if isinstance(event, Refusal):
            return self._enter(Text) + self._delta({"text": event.text})
        if isinstance(event, ToolCallStart):
            stop = self._enter(ToolCallStart, new=True)
            start = {"toolUse": {"toolUseId": event.call.id, "name": event.call.name}}
            payload = {"contentBlockIndex": self._block, "start": start, "p": "abcdefgh"}
            return stop + event_message("contentBlockStart", payload)
        if isinstance(event, ToolArguments):
            return self._delta({"toolUse": {"input": event.piece}})
        raise TypeError(f"no Bedrock rendering for {event!r}")

    def closing(self) -> Sequence[bytes]:
        answer = self._answer
        stop: dict[str, Any] = {"p": "abcdef", "stopReason": self._stop_reason()}
        if self._thinking_usage:
            details = {"output_tokens_details": {"thinking_tokens": answer.reasoning_tokens}}
            stop["additionalModelResponseFields"] = {"usage": details}
        metadata = {"metrics": {"latencyMs": 321}, "p": "ab", "usage": usage(answer)}
        return [
            self._stop(),
            event_message("messageStop", stop),
            event_message("metadata", metadata),
        ]

    def _stop_reason(self) -> str:
        answer = self._answer
        if answer.finish == "content_filter":
            reason = answer.filter_reason
            return reason if reason in _FILTER_REASONS else "guardrail_intervened"
        return _STOP_REASONS[answer.finish]


def usage(answer: Answer) -> dict[str, int]:
    """Converse's usage: `inputTokens` leaves out what was read from the prompt cache."""
    result = {
        "inputTokens": answer.prompt_tokens - answer.cached_tokens,
        "outputTokens": answer.completion_tokens,
        "totalTokens": answer.prompt_tokens + answer.completion_tokens,
    }
    if answer.cached_tokens:
        result["cacheReadInputTokens"] = answer.cached_tokens
        result["cacheWriteInputTokens"] = 0
    return result


class BedrockFormat(WireFormat):
    """Bedrock's ConverseStream (the stream names no model: LiteLLM reports the one it called)."""

    provider: ClassVar[str] = "bedrock"
    content_type: ClassVar[str] = "application/vnd.amazon.eventstream"
    routes: ClassVar[tuple[str, ...]] = ("/model/{model}/converse-stream",)

    def read(self, request: web.Request, body: Any) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise RequestError("request body must be a JSON object with a 'messages' list")
        limit = as_dict(body.get("inferenceConfig")).get("maxTokens")
        paths = body.get("additionalModelResponseFieldPaths")
        return ChatRequest(
            model=request.match_info["model"],
            conversation=_conversation(body),
            max_tokens=positive_int(limit, "inferenceConfig.maxTokens"),
            tools=_tools(body),
            response_fields=tuple(map(str, paths)) if isinstance(paths, list) else (),
        )

    def shape(self, chat: ChatRequest, directive: Directive) -> Shape:
        shown = directive.reasoning_style != "hidden"
        return Shape(provider=self.provider, show_reasoning=shown, redacted=True)

    def refusal(self, request: web.Request) -> web.Response | None:
        key_id, region = self.config.bedrock_key_id, self.config.bedrock_region
        if key_id is None and region is None:
            return None
        scope = credential_scope(request.headers.get("Authorization"))
        if scope is not None and key_id in (None, scope["key_id"]):
            if region in (None, scope["region"]):
                return None
            return self._error(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region. ({scope['region']})",
            )
        return self._error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )

    def error(
        self, status: int, message: str, *, code: str | None = None, retry_after_s: float = 1.0
    ) -> web.Response:
        response = self._error(
            status, code or _ERROR_TYPES.get(status, "InternalServerException"), message
        )
        if status == 429:
            response.headers["Retry-After"] = f"{retry_after_s:g}"
        return response

    def _error(self, status: int, kind: str, message: str) -> web.Response:
        headers = {
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        }
        return web.json_response({"message": message}, status=status, headers=headers)

    def renderer(self, chat: ChatRequest, answer: Answer) -> Renderer:
        return EventStreamRenderer(
            answer, thinking_usage=THINKING_USAGE_PATH in chat.response_fields
        )
