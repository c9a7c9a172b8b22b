"""The simulator's settings: defaults for every request, and what each provider's route demands.

Keys are the server's own configuration, never taken from a request: a route whose key is
set refuses any other, as the real provider would; unset, it takes any key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimulatorConfig:
    """Defaults for every request (directives override them per request) and provider keys."""

    tokens: int = 40
    tokens_per_s: float = 50.0
    ttft_s: float = 0.05
    # Replaces every answer's last token: the provider tests use " 日本語🚀" so that every
    # answer ends in 3- and 4-byte UTF-8 whatever the generator drew.
    answer_ending: str = ""
    openai_key: str | None = None  # `Authorization: Bearer <key>`
    azure_key: str | None = None  # `api-key: <key>`
    gemini_key: str | None = None  # `x-goog-api-key: <key>`
    bedrock_key_id: str | None = None  # the access key id in the SigV4 credential scope
    bedrock_region: str | None = None  # the region in that scope
    # What Azure reports as the model behind any deployment.
    azure_model: str = "gpt-4o-2024-08-06"
