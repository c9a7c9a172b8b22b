"""The directive language: `[[sim key=value ...]]` in the last user message scripts a request.

One language for every provider's route. Keys and meanings (defaults in brackets):

- `tokens=N`: answer length in tokens [the server's `--tokens`].
- `tps=F`: content chunks per second, 0 for as fast as possible [`--tokens-per-s`].
- `ttft=F`: seconds before the first content chunk [`--ttft-s`].
- `status=NNN` (400-599): answer with this HTTP error, in the provider's own error format.
- `code=S`: the error's code in that format (OpenAI `error.code`, Gemini `error.status`,
  Bedrock's error type) [the provider's usual one for the status].
- `retry_after=F`: with `status=429`, the `Retry-After` header (Gemini: also `retryDelay`) [1].
- `drop_after=N`: cut the connection after N content chunks (0: before any text).
- `stall_after=N`: go silent after N content chunks for `stall_s=F` seconds [3600], then cut.
- `times=N`: the fault (`status`, `drop_after`, `stall_after`) strikes only the first N
  requests for this conversation; later ones are answered [every request].
- `split=1`: write each content chunk in two pieces cut inside a multi-byte character.
- `only=P` (`openai`, `azure`, `gemini`, `bedrock`): the fault applies to that provider's
  route only; the others answer normally (for fallback tests). Pacing keys apply everywhere.

Several directives in one message merge, later keys winning; an unknown key or a bad value
is answered with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

PROVIDERS = ("openai", "azure", "gemini", "bedrock")
_DIRECTIVE = re.compile(r"\[\[sim((?:\s+\w+=[^\s\]]*)*)\s*\]\]")


class DirectiveError(ValueError):
    """A directive the simulator cannot follow; answered with a 400 naming the problem."""


def _provider(raw: str) -> str:
    if raw not in PROVIDERS:
        raise ValueError(raw)
    return raw


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

    @property
    def is_fault(self) -> bool:
        return (
            self.status is not None or self.drop_after is not None or self.stall_after is not None
        )

    def applies_to(self, provider: str) -> bool:
        return self.only is None or self.only == provider

    def without_faults(self) -> Directive:
        """The same pacing, nothing going wrong: for a spent `times` or another provider."""
        return replace(self, status=None, code=None, drop_after=None, stall_after=None)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "tokens": int, "tps": float, "ttft": float, "status": int, "code": str,
    "retry_after": float, "drop_after": int, "stall_after": int, "stall_s": float,
    "times": int, "split": int, "only": _provider,
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
    return directive
