"""Google AI Studio's Gemini: `POST /models/{model}:streamGenerateContent?alt=sse` (also under
`/v1beta`), key in `x-goog-api-key`; SSE events separated by CRLF pairs, as Google sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import Answer, Conversation, Event, Message, Text, parts_text
from simulator.wire import ChatRequest, Renderer, RequestError, WireFormat, positive_int, sse

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
_ROLES = {"model": "assistant"}


def _conversation(body: dict[str, Any]) -> Conversation:
    system = body.get("system_instruction", body.get("systemInstruction"))
    messages = []
    if isinstance(system, dict) and (text := parts_text(system.get("parts"))):
        messages.append(Message("system", text))
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            role = str(content.get("role", "user"))
            messages.append(Message(_ROLES.get(role, role), parts_text(content.get("parts"))))
    return tuple(messages)


class GeminiRenderer(Renderer):
    """One `GenerateContentResponse` per text piece; the last carries the finish and usage."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._id = uuid.uuid4().hex[:22]

    def _chunk(self, candidate: dict[str, Any], usage: dict[str, Any]) -> bytes:
        payload = {
            "candidates": [{**candidate, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": self._answer.model,
            "responseId": self._id,
        }
        return sse(payload, end=b"\r\n\r\n")

    def event(self, event: Event) -> bytes:
        if isinstance(event, Text):
            prompt = self._answer.prompt_tokens
            content = {"parts": [{"text": event.text}], "role": "model"}
            return self._chunk(
                {"content": content}, {"promptTokenCount": prompt, "totalTokenCount": prompt}
            )
        raise TypeError(f"no Gemini rendering for {event!r}")

    def closing(self) -> Sequence[bytes]:
        answer = self._answer
        content = {"parts": [{"text": ""}], "role": "model"}
        usage = {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": answer.completion_tokens,
            "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
        }
        return [self._chunk({"content": content, "finishReason": _FINISH[answer.finish]}, usage)]


class GeminiFormat(WireFormat):
    """Gemini's streamed generateContent; the model it reports is the one in the path."""

    provider: ClassVar[str] = "gemini"
    routes: ClassVar[tuple[str, ...]] = tuple(
        prefix + "/models/{model}:streamGenerateContent" for prefix in ("", "/v1beta")
    )

    def read(self, request: web.Request, body: Any) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
            raise RequestError("request body must be a JSON object with a 'contents' list")
        if request.query.get("alt") != "sse":
            raise RequestError("this simulator streams Gemini answers with alt=sse only")
        config = body.get("generationConfig") or {}
        limit = config.get("maxOutputTokens", config.get("max_output_tokens"))
        return ChatRequest(
            model=request.match_info["model"],
            conversation=_conversation(body),
            max_tokens=positive_int(limit, "generationConfig.maxOutputTokens"),
        )

    def refusal(self, request: web.Request) -> web.Response | None:
        key = self.config.gemini_key
        if key is None or request.headers.get("x-goog-api-key") == key:
            return None
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

    def error(
        self, status: int, message: str, *, code: str | None = None, retry_after_s: float = 1.0
    ) -> web.Response:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": code or _STATUSES.get(status, "UNKNOWN"),
        }
        headers = {}
        if status == 429:
            headers["Retry-After"] = f"{retry_after_s:g}"
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after_s:g}s",
                }
            ]
        return web.json_response({"error": error}, status=status, headers=headers)

    def renderer(self, chat: ChatRequest, answer: Answer) -> Renderer:
        return GeminiRenderer(answer)
