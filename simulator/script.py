"""The directive language: `[[sim key=value ...]]` in the last user message scripts a request.

One language for every provider's route. Keys and meanings (defaults in brackets):

- `tokens=N`: answer length in tokens [the server's `--tokens`].
- `tps=F`: content chunks per second, 0 for as fast as possible [`--tokens-per-s`].
- `ttft=F`: seconds before the first content chunk [`--ttft-s`].
- `status=NNN` (400-599): answer with this HTTP error, in the provider's own error format.
- `code=S`: the error's code in that format (OpenAI `error.code`, Gemini `error.status`,
  Bedrock's error type) [the provider's usual one for the status].
- `retry_after=F`: with `status=429`, the `Retry-After` header (Gemini: also `retryDelay`) [1].
- `drop_after=N`: cut the connection after N content chunks (0: before any text); in a
  rich answer every reasoning, refusal or tool-call chunk counts as one.
- `stall_after=N`: go silent after N content chunks (counted alike) for `stall_s=F`
  seconds [3600], then cut.
- `times=N`: the fault (`status`, `drop_after`, `stall_after`) strikes only the first N
  requests for this conversation; later ones are answered [every request].
- `split=1`: write each content (or reasoning, refusal) chunk in two pieces cut inside a
  multi-byte character.
- `only=P` (`openai`, `azure`, `gemini`, `bedrock`): the fault applies to that provider's
  route only; the others answer normally (for fallback tests). Pacing keys apply everywhere.

Rich answers (`simulator.rich` scripts them; every key works on every route, each format
sending what its provider sends; `only=` and `times=` do not apply to them):

- `reasoning=N`: N reasoning tokens before the answer [0]. Their text is
  `expected_reasoning(...)`; Gemini and Bedrock close the block with a signature.
- `reasoning_style=S`: how an OpenAI-format route shows reasoning: `reasoning_content`
  (OpenAI-compatible servers), `reasoning` (`delta.reasoning`, as Groq or Cerebras send it)
  or `hidden` (real OpenAI: no text, only `reasoning_tokens` in the usage). On Gemini and
  Bedrock `hidden` keeps the thoughts off the wire and any other value shows them
  [OpenAI: `reasoning_content`; Azure: `hidden`; Gemini: shown only when the request's
  `thinkingConfig.includeThoughts` is true; Bedrock: shown].
- `think_s=F`: the reasoning takes F seconds: its pieces are spread over them (silence
  when it is hidden or `reasoning=0`), and the first text or tool call comes after [0].
- `redacted=1`: Bedrock adds a redacted reasoning block (`redactedContent`) after the
  reasoning; other routes ignore it.
- `tools=N` or `tools=NAME,NAME`: answer with N tool calls (the request's tools in order,
  again from the first if N is larger) or calls to the tools named; the request must
  define them. Arguments and ids are `expected_tool_calls(...)`. Text comes before the calls
  only when `tokens=` is given too; the finish is `tool_calls`. Once the conversation goes
  on past the question (a `tool` message with the results last), it is answered as text.
- `tool_chunks=N`: each call's arguments stream in N pieces [3] (Gemini sends calls whole).
- `interleave=1`: OpenAI-format routes interleave parallel calls' pieces by index (all
  calls' first fragments, then their pieces in turn) instead of one call after another.
- `refuse=1`: the answer is a refusal: OpenAI-format routes stream it as `delta.refusal`,
  the others as text; the finish stays `stop`.
- `filter_after=N`: the provider's content filter stops the answer after N chunks of it
  (reasoning, text, tool fragments): OpenAI `content_filter`, Gemini `SAFETY`, Bedrock
  `guardrail_intervened`.
- `filter=S`: the filter's reason where the provider has several: Gemini `SAFETY`,
  `PROHIBITED_CONTENT` or `RECITATION`; Bedrock `guardrail_intervened` or
  `content_filtered` (others use their one reason).
- `cached=N`: N more prompt tokens, read from the provider's prompt cache (OpenAI
  `cached_tokens`, Gemini `cachedContentTokenCount`, Bedrock `cacheReadInputTokens`).

Several directives in one message merge, later keys winning; an unknown key or a bad value
is answered with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

PROVIDERS = ("openai", "azure", "gemini", "bedrock")
REASONING_STYLES = ("reasoning_content", "reasoning", "hidden")
FILTER_REASONS = ("SAFETY", "PROHIBITED_CONTENT", "RECITATION", "guardrail_intervened",
                  "content_filtered")  # fmt: skip
_DIRECTIVE = re.compile(r"\[\[sim((?:\s+\w+=[^\s\]]*)*)\s*\]\]")


class DirectiveError(ValueError):
    """A directive the simulator cannot follow; answered with a 400 naming the problem."""


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(raw)
        return raw

    return parse


def _tools(raw: str) -> int | tuple[str, ...]:
    """A number of calls, or the names of the tools to call."""
    if raw.isdigit():
        return int(raw)
    names = tuple(raw.split(","))
    if not all(names):
        raise ValueError(raw)
    return names


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


@dataclass(frozen=True)
class Directive:
    """What one request's directives ask for; None means the server's default."""

    tokens: int | None = None
    tps: float | None = None
    ttft: float | None = None
    status: int | None = None
    code: str | None = None
    retry_after: float = 1.0
    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 3600.0
    times: int | None = None
    split: int = 0
    only: str | None = None
    # Rich answers (simulator.rich).
    reasoning: int = 0
    reasoning_style: str | None = None
    think_s: float = 0.0
    redacted: int = 0
    tools: int | tuple[str, ...] = 0
    tool_chunks: int = 3
    interleave: int = 0
    refuse: int = 0
    filter_after: int | None = None
    filter: str | None = None
    cached: int = 0

    @property
    def is_fault(self) -> bool:
        return (
            self.status is not None or self.drop_after is not None or self.stall_after is not None
        )

    @property
    def is_rich(self) -> bool:
        """Whether the answer is more than plain text (the plain path stays the fast one)."""
        return bool(
            self.reasoning or self.think_s or self.redacted or self.tools or self.refuse
            or self.cached or self.filter_after is not None
        )  # fmt: skip

    def applies_to(self, provider: str) -> bool:
        return self.only is None or self.only == provider

    def without_tools(self) -> Directive:
        return replace(self, tools=0)

    def without_faults(self) -> Directive:
        """The same pacing, nothing going wrong: for a spent `times` or another provider."""
        return replace(self, status=None, code=None, drop_after=None, stall_after=None)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "tokens": int, "tps": float, "ttft": float, "status": int, "code": str,
    "retry_after": float, "drop_after": int, "stall_after": int, "stall_s": float,
    "times": int, "split": int, "only": _one_of(PROVIDERS),
    "reasoning": _count, "reasoning_style": _one_of(REASONING_STYLES), "think_s": float,
    "redacted": int, "tools": _tools, "tool_chunks": _count, "interleave": int, "refuse": int,
    "filter_after": _count, "filter": _one_of(FILTER_REASONS), "cached": _count,
}  # fmt: skip
assert set(_PARSERS) == {field.name for field in fields(Directive)}


def parse_directive(text: str) -> Directive:
    """The directive in a message's text (all `[[sim ...]]` blocks merged)."""
    values: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(text):
        for pair in match.group(1).split():
            key, _, raw = pair.partition("=")
            if key not in _PARSERS:
                raise DirectiveError(f"unknown simulator directive key {key!r}")
            try:
                values[key] = _PARSERS[key](raw)
            except ValueError:
                raise DirectiveError(f"bad value for simulator directive {key!r}") from None
    directive = Directive(**values)
    if directive.status is not None and not 400 <= directive.status <= 599:
        raise DirectiveError("simulator directive status must be 400-599")
    if directive.tool_chunks < 1:
        raise DirectiveError("simulator directive tool_chunks must be at least 1")
    if directive.think_s < 0:
        raise DirectiveError("simulator directive think_s must not be negative")
    return directive
