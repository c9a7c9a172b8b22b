"""What the three message formats share: where a problem is, URLs, media, tool results.

Pure and free of LiteLLM: the conversions run before any provider is chosen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from worker.errors import InvalidRequest

# OpenAI's chat format: the only shape the converters produce.
Message = dict[str, Any]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
URL_SCHEMES = ("https", "http", "data")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+*-]+)?((?:;[\w.+-]+=[^;,]*)*)(;base64)?,", re.ASCII)
# The first bytes of the image formats every provider takes, as the AI SDK detects them.
_IMAGE_SIGNATURES = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}
DENIED_TOOL_OUTPUT = "Tool execution denied."  # the AI SDK's own words for a denied call


@dataclass(frozen=True, slots=True)
class MediaUrl:
    """An http(s) URL a converted message names for an image or a file, and where the job
    wrote it (`messages.2.parts.1`): whether anyone may fetch it depends on the provider."""

    where: str
    url: str
    kind: Literal["image", "file"]


class Where:
    """A path into `request_data` for error messages (`messages.2.parts.1`); the paths of
    one conversion share the list of media URLs found."""

    __slots__ = ("media", "path")

    def __init__(self, path: str, media: list[MediaUrl]) -> None:
        self.path = path
        self.media = media

    def __truediv__(self, key: str | int) -> Where:
        return Where(f"{self.path}.{key}", self.media)

    def fail(self, problem: str) -> InvalidRequest:
        return InvalidRequest(f"invalid request_data: {self.path}: {problem}")

    def found(self, url: str, kind: Literal["image", "file"]) -> None:
        if scheme_of(url) in ("http", "https"):
            self.media.append(MediaUrl(self.path, url, kind))


def kind_of(part: object, where: Where) -> str:
    """A part's `type`, or the error saying it has none."""
    if not isinstance(part, dict):
        raise where.fail("a part must be an object with a `type`")
    kind = part.get("type")
    if not isinstance(kind, str) or not kind:
        raise where.fail("a part needs a string `type`")
    return kind


def text_of(part: dict[str, Any], key: str, where: Where) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise where.fail(f"`{key}` must be a string")
    return value


def optional_str(part: dict[str, Any], key: str, where: Where) -> str | None:
    value = part.get(key)
    if value is not None and not isinstance(value, str):
        raise where.fail(f"`{key}` must be a string")
    return value


def scheme_of(value: str) -> str | None:
    """The URL scheme of a string, lower-cased; None for a string that is no URL (base64)."""
    match = _SCHEME.match(value)
    return match.group(1).lower() if match else None


def check_url(url: object, where: Where, *, field: str) -> str:
    """An `https:`, `http:` or well-formed `data:` URL, as given."""
    if not isinstance(url, str) or not url:
        raise where.fail(f"`{field}` must be a URL string")
    scheme = scheme_of(url)
    if scheme not in URL_SCHEMES:
        raise where.fail(f"`{field}` must be an https: or data: URL, not {scheme or 'a bare'}:")
    if scheme == "data" and _DATA_URL.match(url) is None:
        raise where.fail(f"`{field}` is not a valid data: URL")
    return url


def data_url_media_type(url: str) -> str | None:
    match = _DATA_URL.match(url)
    return match.group(1) if match else None


def data_url(media_type: str, base64_data: str, where: Where) -> str:
    """A `data:` URL from base64 text (checked for base64's alphabet, not decoded)."""
    compact = base64_data.strip()
    if not compact or _BASE64.fullmatch(compact) is None:
        raise where.fail("`data` is neither a URL nor base64")
    return f"data:{media_type};base64,{compact}"


def image_media_type(base64_data: str) -> str:
    """The image type of base64 bytes by their signature; JPEG where none matches, as the AI
    SDK's OpenAI provider assumes for `image/*`."""
    for prefix, media_type in _IMAGE_SIGNATURES:
        if base64_data.startswith(prefix):
            return media_type
    return "image/jpeg"


def media_part(
    url: str, media_type: str | None, filename: str | None, where: Where
) -> dict[str, Any]:
    """An OpenAI content part for a file the AI SDK names by URL: images as `image_url`,
    inline WAV and MP3 as `input_audio`, other media types as `file` (`file_data` for a
    data: URL, `file_id` + `format` for an http(s) URL, LiteLLM's form of a file by
    reference)."""
    check_url(url, where, field="url")
    media_type = media_type or data_url_media_type(url) or ""
    if media_type.startswith("image/"):
        where.found(url, "image")
        return {"type": "image_url", "image_url": {"url": url}}
    if not media_type:
        raise where.fail("a file needs a `mediaType`")
    audio_format = _AUDIO_FORMATS.get(media_type)
    if audio_format is not None and url.startswith("data:") and ";base64," in url:
        # As the AI SDK's OpenAI provider sends WAV and MP3: OpenAI's own audio part.
        data = url.split(";base64,", 1)[1]
        return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}
    file: dict[str, Any] = {}
    if url.startswith("data:"):
        file["file_data"] = url
    else:
        where.found(url, "file")
        file["file_id"] = url
        file["format"] = media_type
    if filename:
        file["filename"] = filename
    return {"type": "file", "file": file}


def tool_call(call_id: str, name: str, tool_input: object) -> dict[str, Any]:
    """An OpenAI `tool_calls` entry: the AI SDK's parsed input, JSON-encoded again."""
    arguments = js_json(tool_input)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_message(call_id: str, content: str) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def js_json(value: object) -> str:
    """JSON exactly as JavaScript's `JSON.stringify` writes it (what the AI SDK sends)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def reasoning_fields(blocks: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """`reasoning_content` (and `thinking_blocks` where a signature is known) from
    (text, provider metadata) pairs: Anthropic's and Bedrock's signatures and redacted
    data are what Claude needs to continue a conversation that used tools."""
    if not blocks:
        return {}
    fields: dict[str, Any] = {"reasoning_content": "".join(text for text, _ in blocks)}
    thinking: list[dict[str, Any]] = []
    for text, metadata in blocks:
        signed = _provider_fields(metadata)
        if "redactedData" in signed:
            thinking.append({"type": "redacted_thinking", "data": signed["redactedData"]})
        elif "signature" in signed:
            thinking.append(
                {"type": "thinking", "thinking": text, "signature": signed["signature"]}
            )
    if thinking:
        fields["thinking_blocks"] = thinking
    return fields


def _provider_fields(metadata: dict[str, Any]) -> dict[str, str]:
    for provider in ("anthropic", "bedrock", "amazon-bedrock"):
        fields = metadata.get(provider)
        if isinstance(fields, dict):
            return {
                key: value
                for key, value in fields.items()
                if key in ("signature", "redactedData") and isinstance(value, str)
            }
    return {}


def metadata_of(part: dict[str, Any], key: str) -> dict[str, Any]:
    value = part.get(key)
    return value if isinstance(value, dict) else {}


def join_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (what every provider takes); else the parts."""
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts
