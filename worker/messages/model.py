"""AI SDK model messages: what `convertToModelMessages` returns and `streamText` takes.

AI SDK 5 and 6 give a file's `data` (and an image's `image`) as a URL string or base64; AI
SDK 7 wraps it as `{"type": "url", "url"}`, `{"type": "data", "data"}` or `{"type":
"text", "text"}`. Provider references (`{"type": "reference", ...}`, `{"openai": "file-…"}`)
name files in one provider's storage and cannot be sent through another: refused.
"""

from __future__ import annotations

import base64
from typing import Any

from worker.messages.common import (
    DENIED_TOOL_OUTPUT,
    Message,
    Where,
    data_url,
    image_media_type,
    join_content,
    js_json,
    kind_of,
    media_part,
    metadata_of,
    optional_str,
    reasoning_fields,
    scheme_of,
    text_of,
    tool_call,
    tool_message,
)

ROLES = ("system", "user", "assistant", "tool")
# Part types only model messages have: one of them makes a message a model message.
MODEL_PART_TYPES = frozenset(
    {
        "image",
        "reasoning",
        "tool-call",
        "tool-result",
        "tool-approval-request",
        "tool-approval-response",
    }
)
_TOOL_OUTPUTS = ("text", "json", "error-text", "error-json", "content", "execution-denied")


def is_model_file(part: object) -> bool:
    """A model message's file part (`data`, `mediaType`), unlike OpenAI's (`file`)."""
    return (
        isinstance(part, dict)
        and part.get("type") == "file"
        and "data" in part
        and "file" not in part
    )


def convert(message: dict[str, Any], where: Where) -> list[Message]:
    role = message["role"]
    content = message.get("content")
    if isinstance(content, str) and role != "tool":
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise where.fail("`content` must be a string or a list of parts")
    where = where / "content"
    if role == "tool":
        return _tool_results(content, where)
    if role == "assistant":
        return [_assistant(content, where)]
    parts = [_user_part(role, part, where / index) for index, part in enumerate(content)]
    if role == "system":
        return [{"role": "system", "content": "".join(part["text"] for part in parts)}]
    return [{"role": role, "content": join_content(parts)}]


def _user_part(role: str, part: object, where: Where) -> dict[str, Any]:
    kind = kind_of(part, where)
    assert isinstance(part, dict)
    if kind == "text":
        return {"type": "text", "text": text_of(part, "text", where)}
    if role == "user" and kind == "image":
        media_type = optional_str(part, "mediaType", where) or optional_str(part, "mimeType", where)
        return media_part(_image_url(part.get("image"), media_type, where), "image/", None, where)
    if role == "user" and kind == "file":
        media_type = optional_str(part, "mediaType", where) or optional_str(part, "mimeType", where)
        if not media_type:
            raise where.fail("a file part needs a `mediaType`")
        url = _data_as_url(part.get("data"), media_type, where)
        return media_part(url, media_type, optional_str(part, "filename", where), where)
    raise where.fail(f"the {role} message cannot carry {kind!r} parts")


def _image_url(image: object, media_type: str | None, where: Where) -> str:
    if isinstance(image, str) and scheme_of(image) is None:
        if not media_type or media_type in ("image/*", "image"):
            media_type = image_media_type(image.strip())
        return data_url(media_type, image, where)
    return _data_as_url(image, media_type or "image/jpeg", where)


def _data_as_url(data: object, media_type: str, where: Where) -> str:
    """A file's data as a URL: a URL as given, base64 (bare or in v7's wrapper) as data:."""
    if isinstance(data, str):
        return data if scheme_of(data) is not None else data_url(media_type, data, where)
    if isinstance(data, dict):
        kind = data.get("type")
        if kind == "url" and isinstance(data.get("url"), str):
            return str(data["url"])
        if kind == "data" and isinstance(data.get("data"), str):
            return data_url(media_type, data["data"], where)
        if kind == "text" and isinstance(data.get("text"), str):
            encoded = base64.b64encode(data["text"].encode()).decode()
            return f"data:{media_type};base64,{encoded}"
        if kind == "reference" or kind is None:
            raise where.fail(
                "a provider file reference cannot be sent; send the file's data or URL"
            )
    raise where.fail("`data` must be a URL, base64, or {type: url|data|text, ...}")


def _assistant(content: list[Any], where: Where) -> Message:
    text: list[str] = []
    reasoning: list[tuple[str, dict[str, Any]]] = []
    calls: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        here = where / index
        kind = kind_of(part, here)
        assert isinstance(part, dict)
        if kind == "text":
            text.append(text_of(part, "text", here))
        elif kind == "reasoning":
            reasoning.append((text_of(part, "text", here), metadata_of(part, "providerOptions")))
        elif kind == "tool-call":
            call_id = text_of(part, "toolCallId", here)
            if part.get("providerExecuted") is True:
                raise here.fail(
                    f"tool call {call_id} was executed by the provider and cannot be sent"
                )
            calls.append(tool_call(call_id, text_of(part, "toolName", here), part.get("input", {})))
        elif kind != "tool-approval-request":  # approvals are the app's business, not the model's
            raise here.fail(f"the assistant message cannot carry {kind!r} parts")
    joined = "".join(text)
    message: Message = {"role": "assistant", "content": joined if joined or not calls else None}
    if calls:
        message["tool_calls"] = calls
    message.update(reasoning_fields(reasoning))
    return message


def _tool_results(content: list[Any], where: Where) -> list[Message]:
    messages = []
    for index, part in enumerate(content):
        here = where / index
        kind = kind_of(part, here)
        assert isinstance(part, dict)
        if kind == "tool-approval-response":
            continue
        if kind != "tool-result":
            raise here.fail(f"a tool message takes tool-result parts, not {kind!r}")
        call_id = text_of(part, "toolCallId", here)
        messages.append(tool_message(call_id, _output(part.get("output"), here / "output")))
    return messages


def _output(output: object, where: Where) -> str:
    """A tool result as text, as the AI SDK's OpenAI provider sends it."""
    if not isinstance(output, dict) or output.get("type") not in _TOOL_OUTPUTS:
        raise where.fail(f"`output` must be {{type: {'|'.join(_TOOL_OUTPUTS)}, value}}")
    kind = output["type"]
    if kind == "execution-denied":
        reason = output.get("reason")
        return reason if isinstance(reason, str) else DENIED_TOOL_OUTPUT
    if "value" not in output:
        raise where.fail("`output` needs a `value`")
    value = output["value"]
    if kind in ("text", "error-text"):
        if not isinstance(value, str):
            raise where.fail(f"a {kind} output's `value` must be a string")
        return value
    return js_json(value)
