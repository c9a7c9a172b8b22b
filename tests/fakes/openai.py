"""OpenAI's and Azure OpenAI's chat completions SSE, each with its own path and key header."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.base import Answer, FakeProvider, sse

_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


# OpenAI answers an alias with the snapshot that served it.
SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}


class OpenAIFake(FakeProvider):
    """`POST /v1/chat/completions`, `Authorization: Bearer <key>`."""

    name: ClassVar[str] = "openai"

    def __init__(self, *, key: str, model_version: str = "") -> None:
        super().__init__(key=key, model_version=model_version)
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

    def reported_model(self, body: dict[str, Any]) -> str:
        requested = str(body.get("model", ""))
        return self.model_version or SNAPSHOTS.get(requested, requested)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self.handle)

    def prompt_of(self, body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        return _text(users[-1].get("content")) if users else ""

    def max_tokens_of(self, body: dict[str, Any]) -> int | None:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    def auth_failure(self, request: web.Request) -> web.Response:
        # OpenAI names the key it was given in this message: the worker must mask it.
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {given}. You can find your API key at ..."
        return self._error_body(401, message, "invalid_request_error", "invalid_api_key")

    def error(self, status: int, retry_after: float) -> web.Response:
        kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "api", None))
        response = self._error_body(status, f"fake {self.name} error {status}", kind, code)
        if status == 429:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def _error_body(self, status: int, message: str, kind: str, code: str | None) -> web.Response:
        error = {"message": message, "type": kind, "param": None, "code": code}
        return web.json_response({"error": error}, status=status)

    def _chunk(self, answer: Answer, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": answer.model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
                **extra,
            }
        )

    def _choice(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def opening(self, answer: Answer) -> list[bytes]:
        role = {"role": "assistant", "content": "", "refusal": None}
        return [self._chunk(answer, [self._choice(role)])]

    def delta(self, answer: Answer, token: str) -> bytes:
        return self._chunk(answer, [self._choice({"content": token})])

    def closing(self, answer: Answer) -> list[bytes]:
        finish = "length" if answer.truncated else "stop"
        events = [self._chunk(answer, [self._choice({}, finish)])]
        options = answer.body.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
            events.append(self._chunk(answer, [], usage=usage))
        return [*events, b"data: [DONE]\n\n"]


class AzureFake(OpenAIFake):
    """`POST /openai/deployments/<deployment>/chat/completions?api-version=...`, `api-key`."""

    name: ClassVar[str] = "azure"

    def __init__(self, *, key: str, model_version: str = "gpt-4o-2024-08-06") -> None:
        super().__init__(key=key, model_version=model_version)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/openai/deployments/{deployment}/chat/completions", self.handle)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("api-key") == self.key and "api-version" in request.query

    def auth_failure(self, request: web.Request) -> web.Response:
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
            " provide a valid key for an active subscription and use a correct regional API"
            " endpoint for your resource."
        )
        return web.json_response({"error": {"code": "401", "message": message}}, status=401)

    def _choice(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**super()._choice(delta, finish), "content_filter_results": {}}

    def opening(self, answer: Answer) -> list[bytes]:
        # Azure's first event has no choices, only the prompt's content-filter verdict.
        filters = [{"prompt_index": 0, "content_filter_results": {}}]
        first = sse(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": filters,
            }
        )
        return [first, *super().opening(answer)]
