"""Where a job's request goes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """A models-file name (routed) or a LiteLLM model string the operator allows."""

    model: str
    routed: bool

    @property
    def label(self) -> str:
        """The metrics' `model` label: LiteLLM strings that jobs chose stay unnamed."""
        return self.model if self.routed else "unlisted"
