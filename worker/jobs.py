"""The values that carry a job through its life: delivery → claim → request → outcome.

Parsing `request_data` (contract section 2) lives here too: it is pure and has no edges.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from worker.errors import InvalidRequest, JobError


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    STREAMING = "streaming"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received queue message; `job_id` is None when the body can never name a job."""

    message_id: str
    receipt_handle: str
    receive_count: int
    sent_at_s: float | None
    job_id: uuid.UUID | None
    poison_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker now owns: every write of the attempt is fenced by `lease`."""

    job_id: uuid.UUID
    attempt: int
    lease: uuid.UUID
    request_data: object


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens an answer used; the details only where the provider reports them."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int | None = None  # part of completion_tokens
    cached_tokens: int | None = None  # part of prompt_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Ending(StrEnum):
    """How this worker's part in a job ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The row went back to `pending` and the message is visible again: another worker
    # restarts the job (a shutdown that outlived its grace period).
    HANDED_BACK = "handed_back"
    # Another attempt holds the job now (this worker's lease ran out): nothing more written.
    LOST = "lost"

    @property
    def row_status(self) -> Status | None:
        """The status this worker writes for the ending; None for LOST (nothing to write)."""
        return _ROW_STATUS[self]


_ROW_STATUS = {
    Ending.COMPLETED: Status.COMPLETED,
    Ending.FAILED: Status.FAILED,
    Ending.CANCELLED: Status.CANCELLED,
    Ending.HANDED_BACK: Status.PENDING,
    Ending.LOST: None,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, with what the row gets for it."""

    ending: Ending
    response_data: dict[str, Any] | None = None
    error: JobError | None = None


LEGACY_PROVIDER_PREFIXES = {
    "openai": "openai",
    "google": "gemini",
    "amazon-bedrock": "bedrock",
    "azure": "azure",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class GenerationOptions(BaseModel):
    """The only options a job may set: they shape the answer, not where it is asked."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    user: str | None = None


class _TextPart(_Strict):
    type: Literal["text"]
    text: str


class _ImageUrlPart(_Strict):
    type: Literal["image_url"]
    image_url: dict[str, Any] | str


class _Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart | _ImageUrlPart] | None = None
    parts: list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> _Message:
        if self.content is None and not self.parts and self.role != "assistant":
            raise ValueError("a message needs `content` or `parts`")
        return self


class _RequestData(_Strict):
    model: Annotated[str, Field(min_length=1)] | None = None
    provider: str | None = None
    modelId: Annotated[str, Field(min_length=1)] | None = None  # noqa: N815 (the app's key)
    messages: Annotated[list[_Message], Field(min_length=1)]
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_a_model(self) -> _RequestData:
        if self.model is None and self.modelId is None:
            raise ValueError("`model` is missing (or the legacy `provider` with `modelId`)")
        if self.model is None and self.provider not in LEGACY_PROVIDER_PREFIXES:
            known = ", ".join(LEGACY_PROVIDER_PREFIXES)
            raise ValueError(f"`provider` must be one of {known} when `modelId` is given")
        return self


_REQUEST_ADAPTER = TypeAdapter(_RequestData)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What to ask: `model` as the job named it; `fallback_model` is the legacy LiteLLM string."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    ignored_options: tuple[str, ...] = ()
    fallback_model: str | None = None


def parse_request(request_data: object) -> JobRequest:
    """Validate `request_data`; raise InvalidRequest with a sentence a user can act on."""
    if not isinstance(request_data, dict):
        raise InvalidRequest("request_data must be a JSON object")
    try:
        parsed = _REQUEST_ADAPTER.validate_python(request_data)
        options = GenerationOptions.model_validate(parsed.options)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc)) from None
    ignored = tuple(sorted(set(parsed.options) - set(GenerationOptions.model_fields)))
    model, fallback_model = parsed.model, None
    if model is None:
        # The legacy form: `modelId` is still looked up in the models file first.
        model = str(parsed.modelId)
        fallback_model = f"{LEGACY_PROVIDER_PREFIXES[str(parsed.provider)]}/{model}"
    return JobRequest(
        model=model,
        messages=[_to_openai(message) for message in parsed.messages],
        options=options.model_dump(exclude_none=True),
        ignored_options=ignored,
        fallback_model=fallback_model,
    )


def _to_openai(message: _Message) -> dict[str, Any]:
    """One message in OpenAI chat format; Vercel AI SDK `parts` become `content`."""
    out: dict[str, Any] = {"role": message.role}
    if message.content is not None:
        out["content"] = (
            message.content
            if isinstance(message.content, str)
            else [part.model_dump() for part in message.content]
        )
    else:
        out["content"] = _parts_to_content(message.parts or [])
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _parts_to_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"parts[{index}].text must be a string")
            converted.append({"type": "text", "text": text})
        elif kind in ("image", "file") and _is_image(part):
            url = part.get("url") or part.get("image")
            converted.append({"type": "image_url", "image_url": {"url": url}})
        # Reasoning, tool and step parts describe the UI's history, not the question.
    if all(part["type"] == "text" for part in converted):
        return "".join(part["text"] for part in converted)
    return converted


def _is_image(part: dict[str, Any]) -> bool:
    media_type = part.get("mediaType") or part.get("mimeType") or "image/"
    url = part.get("url") or part.get("image")
    return isinstance(url, str) and isinstance(media_type, str) and media_type.startswith("image/")


def _describe(exc: ValidationError) -> str:
    """Turn pydantic's errors into one sentence naming where the request is wrong."""
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(part) for part in error["loc"] if not _is_union_tag(part))
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "invalid request_data: " + "; ".join(problems)


def _is_union_tag(part: int | str) -> bool:
    # pydantic names union branches in error locations ("str", "list[...]"); users do not care.
    return isinstance(part, str) and (part in ("str", "list") or "[" in part or part[:1].isupper())
