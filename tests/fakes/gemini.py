"""Google AI Studio's Gemini `streamGenerateContent?alt=sse`, key in `x-goog-api-key`."""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.base import Answer, FakeProvider

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _event(payload: dict[str, Any]) -> bytes:
    # Google separates SSE events with CRLF pairs.
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\r\n\r\n"


class GeminiFake(FakeProvider):
    """`POST /models/<model>:streamGenerateContent?alt=sse` (also under `/v1beta`)."""

    name: ClassVar[str] = "gemini"

    def __init__(self, *, key: str, model_version: str = "gemini-2.0-flash") -> None:
        super().__init__(key=key, model_version=model_version)
        self._id = uuid.uuid4().hex[:22]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("", "/v1beta"):
            router.add_post(prefix + "/models/{model}:streamGenerateContent", self.handle)

    def prompt_of(self, body: dict[str, Any]) -> str:
        users = [c for c in body.get("contents", []) if c.get("role") == "user"]
        parts = users[-1].get("parts", []) if users else []
        return "".join(part.get("text", "") for part in parts)

    def max_tokens_of(self, body: dict[str, Any]) -> int | None:
        value = (body.get("generationConfig") or {}).get(
            "maxOutputTokens", (body.get("generationConfig") or {}).get("max_output_tokens")
        )
        return value if isinstance(value, int) else None

    def authorized(self, request: web.Request) -> bool:
        return request.query.get("alt") == "sse" and request.headers.get("x-goog-api-key") == (
            self.key
        )

    def auth_failure(self, request: web.Request) -> web.Response:
        # What Google AI Studio really answers to a wrong key: a 400, not a 401.
        error = {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ],
        }
        return web.json_response({"error": error}, status=400)

    def error(self, status: int, retry_after: float) -> web.Response:
        error: dict[str, Any] = {
            "code": status,
            "message": f"fake {self.name} error {status}",
            "status": _STATUSES.get(status, "UNKNOWN"),
        }
        headers = {}
        if status == 429:
            headers["Retry-After"] = f"{retry_after:g}"
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            ]
        return web.json_response({"error": error}, status=status, headers=headers)

    def _chunk(self, answer: Answer, candidate: dict[str, Any], usage: dict[str, Any]) -> bytes:
        return _event(
            {
                "candidates": [{**candidate, "index": 0}],
                "usageMetadata": usage,
                "modelVersion": answer.model,
                "responseId": self._id,
            }
        )

    def opening(self, answer: Answer) -> list[bytes]:
        return []

    def delta(self, answer: Answer, token: str) -> bytes:
        content = {"parts": [{"text": token}], "role": "model"}
        usage = {"promptTokenCount": answer.prompt_tokens, "totalTokenCount": answer.prompt_tokens}
        return self._chunk(answer, {"content": content}, usage)

    def closing(self, answer: Answer) -> list[bytes]:
        content = {"parts": [{"text": ""}], "role": "model"}
        finish = "MAX_TOKENS" if answer.truncated else "STOP"
        usage = {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": answer.completion_tokens,
            "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
        }
        return [self._chunk(answer, {"content": content, "finishReason": finish}, usage)]
