"""Google AI Studio's Gemini: `POST /models/{model}:streamGenerateContent?alt=sse` (also under
`/v1beta`), key in `x-goog-api-key`; SSE events separated by CRLF pairs, as Google sends them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from aiohttp import web

from simulator.answers import (
    Answer,
    Conversation,
    Event,
    Message,
    Reasoning,
    Refusal,
    Text,
    ToolCalls,
    parts_text,
)
from simulator.rich import Shape, Tool
from simulator.script import Directive
from simulator.wire import (
    ChatRequest,
    Renderer,
    RequestError,
    WireFormat,
    as_dict,
    positive_int,
    sse,
)

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_FILTER_REASONS = ("SAFETY", "PROHIBITED_CONTENT", "RECITATION")
_CATEGORIES = ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
               "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT")  # fmt: skip
# A SAFETY stop names the category that tripped it; the others rate negligible.
SAFETY_RATINGS = [
    {"category": category, "probability": "HIGH" if i == 2 else "NEGLIGIBLE"}
    | ({"blocked": True} if i == 2 else {})
    for i, category in enumerate(_CATEGORIES)
]
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


def _tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """The request's `tools[].functionDeclarations[]`, names and parameter schemas."""
    found = []
    for entry in body.get("tools") or []:
        tool = as_dict(entry)  # LiteLLM sends the snake_case spelling, Google's SDKs camelCase
        for raw in tool.get("functionDeclarations", tool.get("function_declarations")) or []:
            declaration = as_dict(raw)
            if isinstance(declaration.get("name"), str):
                schema = declaration.get("parameters", declaration.get("parametersJsonSchema"))
                found.append(Tool(declaration["name"], as_dict(schema)))
    return tuple(found)


def _part(event: Event) -> list[dict[str, Any]]:
    """The parts of a rich event: a thought, refusal text, or whole function calls."""
    if isinstance(event, Reasoning):
        part: dict[str, Any] = {"text": event.text, "thought": True}
        if event.signature is not None:
            part["thoughtSignature"] = event.signature
        return [part]
    if isinstance(event, Refusal):
        return [{"text": event.text}]
    if isinstance(event, ToolCalls):
        parts: list[dict[str, Any]] = []
        for call in event.calls:
            function = {"id": call.id, "name": call.name, "args": json.loads(call.arguments)}
            parts.append({"functionCall": function})
        if event.signature is not None and parts:
            parts[0]["thoughtSignature"] = event.signature
        return parts
    raise TypeError(f"no Gemini rendering for {event!r}")


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
        prompt = self._answer.prompt_tokens
        usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if isinstance(event, Text):
            content = {"parts": [{"text": event.text}], "role": "model"}
        else:
            content = {"parts": _part(event), "role": "model"}
        return self._chunk({"content": content}, usage)

    def closing(self) -> Sequence[bytes]:
        answer = self._answer
        if answer.finish == "content_filter":
            reason = answer.filter_reason
            reason = reason if reason in _FILTER_REASONS else "SAFETY"
            # Google sends a stopped candidate without content; SAFETY says which category.
            candidate: dict[str, Any] = {"finishReason": reason}
            if reason == "SAFETY":
                candidate["safetyRatings"] = SAFETY_RATINGS
        else:
            content = {"parts": [{"text": ""}], "role": "model"}
            candidate = {"content": content, "finishReason": _FINISH[answer.finish]}
        return [self._chunk(candidate, usage_metadata(answer))]


def usage_metadata(answer: Answer) -> dict[str, Any]:
    """Gemini's usage: `candidatesTokenCount` leaves out the thoughts, counted on their own."""
    usage: dict[str, Any] = {
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.completion_tokens - answer.reasoning_tokens,
        "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
    }
    if answer.cached_tokens:
        usage["cachedContentTokenCount"] = answer.cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.cached_tokens}]
    if answer.reasoning_tokens:
        usage["thoughtsTokenCount"] = answer.reasoning_tokens
    return usage


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
        config = as_dict(body.get("generationConfig"))
        limit = config.get("maxOutputTokens", config.get("max_output_tokens"))
        thinking = as_dict(config.get("thinkingConfig", config.get("thinking_config")))
        return ChatRequest(
            model=request.match_info["model"],
            conversation=_conversation(body),
            max_tokens=positive_int(limit, "generationConfig.maxOutputTokens"),
            tools=_tools(body),
            include_thoughts=thinking.get("includeThoughts", thinking.get("include_thoughts"))
            is True,
        )

    def shape(self, chat: ChatRequest, directive: Directive) -> Shape:
        # Gemini sends thought parts only when asked to; the count comes either way.
        style = directive.reasoning_style
        shown = chat.include_thoughts if style is None else style != "hidden"
        return Shape(provider=self.provider, show_reasoning=shown, whole_tool_calls=True)

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
