"""OpenAI chat messages: checked part by part, then passed on as given.

Only the keys of OpenAI's chat format (and LiteLLM's `reasoning_content`/`thinking_blocks`)
are kept: an app's own keys on a message (`id`, `createdAt`) would make providers refuse it.
"""

from __future__ import annotations

from typing import Any

from worker.messages.common import Message, Where, check_url, kind_of, optional_str, text_of

ROLES = ("system", "developer", "user", "assistant", "tool")
_KEPT = {
    "system": ("role", "content", "name"),
    "developer": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": (
        "role",
        "content",
        "name",
        "tool_calls",
        "refusal",
        "reasoning_content",
        "thinking_blocks",
        "function_call",
    ),
    "tool": ("role", "content", "tool_call_id", "name"),
}
_PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "file", "input_audio"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
_AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "m4a", "webm", "aac", "pcm16", "opus")
_THINKING_TYPES = ("thinking", "redacted_thinking")


def convert(message: dict[str, Any], where: Where) -> Message:
    """The message as given, once its structure is known to be sound."""
    role = message["role"]
    content = message.get("content")
    if content is None:
        if role != "assistant":
            raise where.fail("a message needs `content` or `parts`")
        if not message.get("tool_calls") and not message.get("function_call"):
            raise where.fail("an assistant message needs `content` or `tool_calls`")
    elif isinstance(content, list):
        for index, part in enumerate(content):
            _check_part(role, part, where / "content" / index)
    elif not isinstance(content, str):
        raise (where / "content").fail("must be a string, a list of parts, or null")
    optional_str(message, "name", where)
    if role == "tool":
        text_of(message, "tool_call_id", where)
    if role == "assistant":
        _check_assistant(message, where)
    return {key: message[key] for key in _KEPT[role] if key in message}


def _check_assistant(message: dict[str, Any], where: Where) -> None:
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise where.fail("`tool_calls` must be a list")
        for index, call in enumerate(tool_calls):
            _check_tool_call(call, where / "tool_calls" / index)
    optional_str(message, "reasoning_content", where)
    optional_str(message, "refusal", where)
    blocks = message.get("thinking_blocks")
    if blocks is not None:
        if not isinstance(blocks, list):
            raise where.fail("`thinking_blocks` must be a list")
        for index, block in enumerate(blocks):
            if kind_of(block, where / "thinking_blocks" / index) not in _THINKING_TYPES:
                raise (where / "thinking_blocks" / index).fail(
                    "a thinking block's `type` is `thinking` or `redacted_thinking`"
                )


def _check_tool_call(call: object, where: Where) -> None:
    if kind_of(call, where) != "function" or not isinstance(call, dict):
        raise where.fail('a tool call\'s `type` must be "function"')
    text_of(call, "id", where)
    function = call.get("function")
    if not isinstance(function, dict):
        raise where.fail("a tool call needs a `function` with `name` and `arguments`")
    text_of(function, "name", where / "function")
    text_of(function, "arguments", where / "function")


def _check_part(role: str, part: object, where: Where) -> None:
    kind = kind_of(part, where)
    assert isinstance(part, dict)
    if kind not in _PART_TYPES[role]:
        allowed = ", ".join(_PART_TYPES[role])
        raise where.fail(f"the {role} message takes parts of type {allowed}, not {kind!r}")
    if kind == "text":
        text_of(part, "text", where)
    elif kind == "refusal":
        text_of(part, "refusal", where)
    elif kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        where.found(check_url(url, where, field="image_url.url"), "image")
    elif kind == "file":
        _check_file(part, where)
    else:
        _check_audio(part, where)


def _check_file(part: dict[str, Any], where: Where) -> None:
    """`file_data` (a data: URL), or LiteLLM's `file_id`: a provider's file id or a URL."""
    file = part.get("file")
    if not isinstance(file, dict):
        raise where.fail("a file part needs a `file` object")
    file_data = optional_str(file, "file_data", where / "file")
    file_id = optional_str(file, "file_id", where / "file")
    optional_str(file, "filename", where / "file")
    optional_str(file, "format", where / "file")
    if file_data is None and file_id is None:
        raise where.fail("a file part needs `file.file_data` or `file.file_id`")
    if file_data is not None:
        if not file_data.startswith("data:"):
            raise where.fail("`file.file_data` must be a data: URL")
        check_url(file_data, where, field="file.file_data")  # data: only, never fetched
    if file_id is not None and ("://" in file_id or file_id.lower().startswith("www.")):
        # LiteLLM downloads a file_id that looks like a link; only a real URL can be checked.
        where.found(check_url(file_id, where, field="file.file_id"), "file")


def _check_audio(part: dict[str, Any], where: Where) -> None:
    audio = part.get("input_audio")
    if not isinstance(audio, dict):
        raise where.fail("an input_audio part needs an `input_audio` object")
    text_of(audio, "data", where / "input_audio")
    audio_format = text_of(audio, "format", where / "input_audio")
    if audio_format not in _AUDIO_FORMATS:
        raise where.fail(f"`input_audio.format` must be one of {', '.join(_AUDIO_FORMATS)}")
