"""Vercel AI SDK UI messages (`parts`, AI SDK 5 to 7; v4's `experimental_attachments`).

Mirrors the SDK's own `convertToModelMessages`: an assistant message is cut into steps at
each `step-start`; each step becomes one assistant message (its text, reasoning and tool
calls) followed by one `tool` message per finished call, so that providers see every call
answered before the next step's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.messages.common import (
    DENIED_TOOL_OUTPUT,
    Message,
    Where,
    join_content,
    js_json,
    kind_of,
    media_part,
    metadata_of,
    optional_str,
    reasoning_fields,
    text_of,
    tool_call,
    tool_message,
)

ROLES = ("system", "user", "assistant")
_DROPPED = frozenset({"step-start", "source-url", "source-document"})
_FINISHED = frozenset({"output-available", "output-error", "output-denied"})
# States whose call has no result yet: a provider refuses a call that was never answered.
_UNFINISHED = frozenset({"input-available", "approval-requested", "approval-responded"})


def convert(message: dict[str, Any], where: Where) -> list[Message]:
    role = message["role"]
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise where.fail("`parts` must be a list")
    attachments = message.get("experimental_attachments")
    if role == "assistant":
        if attachments:
            raise where.fail("an assistant message cannot carry attachments")
        return _assistant(parts, where / "parts")
    content = [
        converted
        for index, part in enumerate(parts)
        if (converted := _user_part(role, part, where / "parts" / index)) is not None
    ]
    content += _attachments(attachments, where / "experimental_attachments")
    if role == "system":
        return [{"role": "system", "content": "".join(part["text"] for part in content)}]
    return [{"role": role, "content": join_content(content)}]


def convert_v4(message: dict[str, Any], where: Where) -> list[Message]:
    """A v4 UI message without `parts`: its `content` text and its attachments."""
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if text:
        content.append({"type": "text", "text": text_of(message, "content", where)})
    content += _attachments(
        message.get("experimental_attachments"), where / "experimental_attachments"
    )
    if message["role"] != "user":
        raise where.fail("only user messages carry `experimental_attachments`")
    return [{"role": "user", "content": join_content(content)}]


def _user_part(role: str, part: object, where: Where) -> dict[str, Any] | None:
    kind = kind_of(part, where)
    assert isinstance(part, dict)
    if kind == "text":
        return {"type": "text", "text": text_of(part, "text", where)}
    if kind in _DROPPED or kind.startswith("data-") or kind == "reasoning":
        return None  # the SDK drops reasoning outside assistant messages too
    if kind == "file" and role == "user":
        return _file(part, where)
    raise where.fail(f"the {role} message cannot carry {kind!r} parts")


def _file(part: dict[str, Any], where: Where) -> dict[str, Any]:
    url = part.get("url")
    if not isinstance(url, str):
        raise where.fail("a file part needs a `url` (an https: or data: URL)")
    media_type = optional_str(part, "mediaType", where)
    return media_part(url, media_type, optional_str(part, "filename", where), where)


def _attachments(attachments: object, where: Where) -> list[dict[str, Any]]:
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        raise where.fail("`experimental_attachments` must be a list")
    converted = []
    for index, attachment in enumerate(attachments):
        here = where / index
        if not isinstance(attachment, dict) or not isinstance(attachment.get("url"), str):
            raise here.fail("an attachment needs a `url`")
        media_type = optional_str(attachment, "contentType", here)
        name = optional_str(attachment, "name", here)
        converted.append(media_part(attachment["url"], media_type, name, here))
    return converted


@dataclass
class _Step:
    """One step of an assistant message on its way to OpenAI messages."""

    text: list[str] = field(default_factory=list)
    reasoning: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    results: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        if not (self.text or self.reasoning or self.calls):
            return []
        text = "".join(self.text)
        message: Message = {
            "role": "assistant",
            "content": text if text or not self.calls else None,
        }
        if self.calls:
            message["tool_calls"] = self.calls
        message.update(reasoning_fields(self.reasoning))
        return [message, *self.results]


def _assistant(parts: list[Any], where: Where) -> list[Message]:
    messages: list[Message] = []
    step = _Step()
    for index, part in enumerate(parts):
        here = where / index
        kind = kind_of(part, here)
        assert isinstance(part, dict)
        if kind == "step-start":
            messages += step.messages()
            step = _Step()
        elif kind == "text":
            step.text.append(text_of(part, "text", here))
        elif kind == "reasoning":
            step.reasoning.append(
                (text_of(part, "text", here), metadata_of(part, "providerMetadata"))
            )
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            _tool(part, kind, step, here)
        elif not (kind in _DROPPED or kind.startswith("data-")):
            raise here.fail(f"the assistant message cannot carry {kind!r} parts")
    return messages + step.messages()


def _tool(part: dict[str, Any], kind: str, step: _Step, where: Where) -> None:
    name = text_of(part, "toolName", where) if kind == "dynamic-tool" else kind[5:]
    call_id = text_of(part, "toolCallId", where)
    state = part.get("state")
    if part.get("providerExecuted") is True:
        # The provider ran it (a web search) and holds its result: chat format cannot say so.
        raise where.fail(f"tool call {call_id} was executed by the provider and cannot be sent")
    if state == "input-streaming":
        return  # a call still being written: the SDK drops it, so does the worker
    if state in _UNFINISHED:
        raise where.fail(f"tool call {call_id} has no output yet (state {state!r})")
    if state not in _FINISHED:
        raise where.fail(f"unknown tool state {state!r}")
    step.calls.append(tool_call(call_id, name, part.get("input", {})))
    if state == "output-available":
        output = part.get("output")
        step.results.append(
            tool_message(call_id, output if isinstance(output, str) else js_json(output))
        )
    elif state == "output-error":
        step.results.append(tool_message(call_id, text_of(part, "errorText", where)))
    else:
        reason = metadata_of(part, "approval").get("reason")
        step.results.append(
            tool_message(call_id, reason if isinstance(reason, str) else DENIED_TOOL_OUTPUT)
        )
