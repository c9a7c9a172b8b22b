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
from worker.messages import MediaUrl, convert


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


# The values LiteLLM 1.110.2 accepts (`litellm.types.llms.openai.REASONING_EFFORT`); a test
# keeps them equal. Whether a model takes the option at all is the LLM edge's to say.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class _Option(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class _FunctionDefinition(_Option):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(_Option):
    """A tool in OpenAI's format: `{"type": "function", "function": {"name", ...}}`."""

    type: Literal["function"]
    function: _FunctionDefinition


class _ToolName(_Option):
    name: str


class _NamedToolChoice(_Option):
    type: Literal["function"]
    function: _ToolName


class _ResponseFormat(_Option):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class _Thinking(_Option):
    """Anthropic's extended thinking, as LiteLLM takes it for Claude on every provider."""

    type: Literal["enabled", "disabled"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _budget_when_enabled(self) -> _Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("`thinking` of type enabled needs `budget_tokens`")
        return self


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
    response_format: _ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None
    thinking: _Thinking | None = None
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None


class _RequestData(_Strict):
    model: Annotated[str, Field(min_length=1)] | None = None
    provider: str | None = None
    modelId: Annotated[str, Field(min_length=1)] | None = None  # noqa: N815 (the app's key)
    # Checked and converted by worker.messages, which names the message and part at fault.
    messages: Annotated[list[Any], Field(min_length=1)]
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
    """What to ask: `model` as the job named it; `fallback_model` is the legacy LiteLLM string.

    `messages` are in OpenAI's chat format whatever format the job used (worker.messages);
    `options` are generation options only, the model's provider may still not take some.
    """

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    ignored_options: tuple[str, ...] = ()
    fallback_model: str | None = None
    # The http(s) media URLs in `messages`, for the LLM edge's no-fetch policy (contract 8).
    media_urls: tuple[MediaUrl, ...] = ()


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
    converted = convert(parsed.messages)
    return JobRequest(
        model=model,
        messages=converted.messages,
        # Only what the job set: a tool's JSON schema keeps its nulls and extra keys.
        options={
            key: value
            for key, value in options.model_dump(exclude_unset=True).items()
            if value is not None
        },
        ignored_options=ignored,
        fallback_model=fallback_model,
        media_urls=converted.media_urls,
    )


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
