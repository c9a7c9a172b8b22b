"""Local fakes of the providers' streaming APIs, each speaking that provider's real wire format."""

from __future__ import annotations

from tests.fakes.base import (
    DEFAULT_TOKENS,
    FakeProvider,
    Received,
    answer_for,
    expected_answer,
    prompt_tokens,
)
from tests.fakes.bedrock import BedrockFake, credential_scope, event_message
from tests.fakes.gemini import GeminiFake
from tests.fakes.openai import AzureFake, OpenAIFake

__all__ = [
    "DEFAULT_TOKENS",
    "AzureFake",
    "BedrockFake",
    "FakeProvider",
    "GeminiFake",
    "OpenAIFake",
    "Received",
    "answer_for",
    "credential_scope",
    "event_message",
    "expected_answer",
    "prompt_tokens",
]
