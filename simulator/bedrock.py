"""AWS Bedrock ConverseStream: `POST /model/{model id}/converse-stream`, SigV4-signed; answers
in AWS event-stream framing (prelude with lengths and CRC, string headers, JSON, message CRC).

The signature itself is not verified (the simulator knows no secret key); the credential
scope is, against the access key id and region the server is configured with.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import Answer, Conversation, Event, Message, Text, parts_text
from simulator.wire import ChatRequest, Renderer, RequestError, WireFormat, positive_int

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
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
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


class EventStreamRenderer(Renderer):
    """messageStart, one contentBlockDelta per text piece, then stop and usage metadata."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    def opening(self) -> Sequence[bytes]:
        return [event_message("messageStart", {"p": "abcdefghijk", "role": "assistant"})]

    def event(self, event: Event) -> bytes:
        if isinstance(event, Text):
            payload = {"contentBlockIndex": 0, "delta": {"text": event.text}, "p": "abcd"}
            return event_message("contentBlockDelta", payload)
        raise TypeError(f"no Bedrock rendering for {event!r}")

    def closing(self) -> Sequence[bytes]:
        answer = self._answer
        usage = {
            "inputTokens": answer.prompt_tokens,
            "outputTokens": answer.completion_tokens,
            "totalTokens": answer.prompt_tokens + answer.completion_tokens,
        }
        stop = {"p": "abcdef", "stopReason": _STOP_REASONS[answer.finish]}
        return [
            event_message("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefgh"}),
            event_message("messageStop", stop),
            event_message("metadata", {"metrics": {"latencyMs": 321}, "p": "ab", "usage": usage}),
        ]


class BedrockFormat(WireFormat):
    """Bedrock's ConverseStream (the stream names no model: LiteLLM reports the one it called)."""

    provider: ClassVar[str] = "bedrock"
    content_type: ClassVar[str] = "application/vnd.amazon.eventstream"
    routes: ClassVar[tuple[str, ...]] = ("/model/{model}/converse-stream",)

    def read(self, request: web.Request, body: Any) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise RequestError("request body must be a JSON object with a 'messages' list")
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        return ChatRequest(
            model=request.match_info["model"],
            conversation=_conversation(body),
            max_tokens=positive_int(limit, "inferenceConfig.maxTokens"),
        )

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
        return EventStreamRenderer(answer)
