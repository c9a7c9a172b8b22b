"""A job's `messages` in the one format LiteLLM takes: OpenAI's chat format (contract 2, 8).

Three formats arrive, told apart per message by their shape:

- a message with `parts` (or v4's `experimental_attachments`) is an AI SDK **UI message**
  (`ui`);
- a message whose `content` list holds a part only AI SDK **model messages** have
  (`image`, `reasoning`, `tool-call`, `tool-result`, a `file` with `data`), or a `tool`
  message whose `content` is a list, is a model message (`model`);
- anything else is an **OpenAI** message (`openai`), checked and passed on as given. A
  string `content` reads the same in both formats.

One input message may become several (a UI assistant message of several steps, a model
`tool` message with several results). Errors name the input message and part:
`messages.2.parts.1: ...`. Pure: no I/O, no LiteLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.errors import InvalidRequest
from worker.messages import model, openai, ui
from worker.messages.common import MediaUrl, Message, Where

__all__ = ["Converted", "MediaUrl", "Message", "convert", "to_openai"]


@dataclass(frozen=True, slots=True)
class Converted:
    messages: list[Message]
    # Every http(s) image or file URL in them, named by where the job wrote it.
    media_urls: tuple[MediaUrl, ...]


def convert(messages: list[Any]) -> Converted:
    """Every message in OpenAI's chat format; InvalidRequest naming the first bad part."""
    if not messages:
        raise InvalidRequest("invalid request_data: messages: List should have at least 1 item")
    converted: list[Message] = []
    media: list[MediaUrl] = []
    for index, message in enumerate(messages):
        converted += _one(message, Where(f"messages.{index}", media))
    return Converted(converted, tuple(media))


def to_openai(messages: list[Any]) -> list[Message]:
    return convert(messages).messages


def _one(message: object, where: Where) -> list[Message]:
    if not isinstance(message, dict):
        raise where.fail("a message must be an object with a `role`")
    role = message.get("role")
    if role not in openai.ROLES:
        raise (where / "role").fail(f"must be one of {', '.join(openai.ROLES)}, not {role!r}")
    if "parts" in message and message["parts"] is not None:
        _check_role(role, ui.ROLES, "UI", where)
        return ui.convert(message, where)
    if message.get("experimental_attachments"):
        return ui.convert_v4(message, where)
    if _is_model_message(message):
        _check_role(role, model.ROLES, "model", where)
        return model.convert(message, where)
    return [openai.convert(message, where)]


def _is_model_message(message: dict[str, Any]) -> bool:
    content = message.get("content")
    if not isinstance(content, list) or "tool_calls" in message:
        return False
    if message["role"] == "tool" and "tool_call_id" not in message:
        return True
    return any(
        (isinstance(part, dict) and part.get("type") in model.MODEL_PART_TYPES)
        or model.is_model_file(part)
        for part in content
    )


def _check_role(role: str, roles: tuple[str, ...], kind: str, where: Where) -> None:
    if role not in roles:
        raise (where / "role").fail(f"an AI SDK {kind} message's role is one of {', '.join(roles)}")
