"""AWS Bedrock ConverseStream: SigV4-signed requests, answers in AWS event-stream framing."""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.base import Answer, FakeProvider

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


class BedrockFake(FakeProvider):
    """`POST /model/<model id, url-encoded>/converse-stream`; `key` is the access key id."""

    name: ClassVar[str] = "bedrock"
    content_type: ClassVar[str] = "application/vnd.amazon.eventstream"

    def __init__(self, *, key: str, model_version: str = "") -> None:
        super().__init__(key=key, model_version=model_version)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/model/{model}/converse-stream", self.handle)

    def prompt_of(self, body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        blocks = users[-1].get("content", []) if users else []
        return "".join(block.get("text", "") for block in blocks)

    def max_tokens_of(self, body: dict[str, Any]) -> int | None:
        value = (body.get("inferenceConfig") or {}).get("maxTokens")
        return value if isinstance(value, int) else None

    def authorized(self, request: web.Request) -> bool:
        scope = credential_scope(request.headers.get("Authorization"))
        return scope is not None and scope["key_id"] == self.key

    def auth_failure(self, request: web.Request) -> web.Response:
        return self._error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )

    def error(self, status: int, retry_after: float) -> web.Response:
        kind = _ERROR_TYPES.get(status, "InternalServerException")
        response = self._error(status, kind, f"fake {self.name} error {status}")
        if status == 429:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def _error(self, status: int, kind: str, message: str) -> web.Response:
        headers = {
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        }
        return web.json_response({"message": message}, status=status, headers=headers)

    def opening(self, answer: Answer) -> list[bytes]:
        return [event_message("messageStart", {"p": "abcdefghijk", "role": "assistant"})]

    def delta(self, answer: Answer, token: str) -> bytes:
        payload = {"contentBlockIndex": 0, "delta": {"text": token}, "p": "abcd"}
        return event_message("contentBlockDelta", payload)

    def closing(self, answer: Answer) -> list[bytes]:
        stop = "max_tokens" if answer.truncated else "end_turn"
        usage = {
            "inputTokens": answer.prompt_tokens,
            "outputTokens": answer.completion_tokens,
            "totalTokens": answer.prompt_tokens + answer.completion_tokens,
        }
        return [
            event_message("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefgh"}),
            event_message("messageStop", {"p": "abcdef", "stopReason": stop}),
            event_message("metadata", {"metrics": {"latencyMs": 321}, "p": "ab", "usage": usage}),
        ]
