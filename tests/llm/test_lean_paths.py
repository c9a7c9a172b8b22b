"""Which path each model and job takes: the lean readers where they cover the settings, and
LiteLLM's Router wrapper for what only LiteLLM does (said once per model, or per job)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulator import Simulator, SimulatorConfig
from worker.jobs import JobRequest
from worker.llm.catalog import ModelCatalog
from worker.llm.completer import Completer
from worker.llm.events import Answered, StreamEvent
from worker.llm.lean import lean_models
from worker.llm.target import Target

KEY = "sk-paths-test-0123456789abcdef"
OPENAI: dict[str, Any] = {
    "model": "openai/gpt-4o-mini",
    "api_base": "http://127.0.0.1:9/v1",
    "api_key": KEY,
}
AZURE: dict[str, Any] = {
    "model": "azure/dep",
    "api_base": "http://127.0.0.1:9",
    "api_key": KEY,
    "api_version": "v1",
}
GEMINI: dict[str, Any] = {
    "model": "gemini/gemini-3.5-flash",
    "api_base": "http://127.0.0.1:9",
    "api_key": KEY,
}
BEDROCK: dict[str, Any] = {
    "model": "bedrock/us.anthropic.claude-sonnet-4-6",
    "aws_region_name": "eu-west-3",
}


def catalog(
    tmp_path: Path, entries: list[tuple[str, dict[str, Any]]], **router: Any
) -> ModelCatalog:
    path = tmp_path / f"models-{uuid.uuid4().hex[:6]}.yaml"
    model_list = [{"model_name": name, "litellm_params": params} for name, params in entries]
    path.write_text(yaml.safe_dump({"model_list": model_list, "router_settings": router}))
    return ModelCatalog.load(path)


def test_every_provider_with_plain_settings_is_lean(tmp_path: Path) -> None:
    entries = [
        ("o", OPENAI),
        ("a", AZURE),
        ("g", GEMINI),
        ("b", BEDROCK),
        ("o", {**OPENAI, "rpm": 5}),
    ]
    _, paths = lean_models(catalog(tmp_path, entries, fallbacks=[{"o": ["g"]}], cooldown_time=5))
    assert paths == {"o": "", "a": "", "g": "", "b": ""}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({**OPENAI, "extra_headers": {"X": "1"}}, "extra_headers"),
        ({**OPENAI, "organization": "org-1"}, "organization"),
        ({**OPENAI, "api_key": "aws_secret_manager/key"}, "secret store"),
        ({**AZURE, "api_key": None, "azure_ad_token_provider": "x"}, "azure_ad_token_provider"),
        ({**GEMINI, "vertex_project": "p"}, "vertex_project"),
        ({**BEDROCK, "aws_role_name": "arn:aws:iam::1:role/r"}, "aws_role_name"),
        ({"model": "bedrock/invoke/anthropic.claude-v2"}, "outside ConverseStream"),
        ({"model": "anthropic/claude-sonnet-4-6", "api_key": KEY}, "no lean reader"),
    ],
)
def test_settings_only_litellm_applies_keep_the_model_on_its_wrapper(
    tmp_path: Path, params: dict[str, Any], reason: str
) -> None:
    _, paths = lean_models(catalog(tmp_path, [("m", params)]))
    assert reason in paths["m"]


def test_router_features_the_lean_path_does_not_run_keep_every_model_on_the_router(
    tmp_path: Path,
) -> None:
    _, paths = lean_models(
        catalog(tmp_path, [("m", OPENAI)], routing_strategy="usage-based-routing-v2")
    )
    assert "usage-based-routing-v2" in paths["m"]
    _, paths = lean_models(catalog(tmp_path, [("m", OPENAI)], enable_pre_call_checks=True))
    assert "enable_pre_call_checks" in paths["m"]


def test_a_fallback_without_a_lean_reader_keeps_its_primary_on_the_router(tmp_path: Path) -> None:
    entries = [("m", OPENAI), ("other", {"model": "anthropic/claude-sonnet-4-6", "api_key": KEY})]
    _, paths = lean_models(catalog(tmp_path, entries, fallbacks=[{"m": ["other"]}]))
    assert paths["m"].startswith("fallback other:")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=5, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


async def answer(
    completer: Completer, model: str, messages: list[dict[str, Any]]
) -> list[StreamEvent]:
    request = JobRequest(model=model, messages=messages, options={})
    return [event async for event in completer.stream(Target(model, routed=True), request)]


CACHED_PART = {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}
TOOL_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        (TOOL_HISTORY, "thought signature"),
        ([{"role": "user", "content": [CACHED_PART]}], "cache_control"),
    ],
)  # fmt: skip
async def test_gemini_jobs_only_litellm_handles_go_through_its_wrapper(
    tmp_path: Path, sim: Simulator, messages: list[dict[str, Any]], reason: str
) -> None:
    completer = Completer(
        catalog(
            tmp_path,
            [
                ("g", {**GEMINI, "api_base": sim.url}),
                ("o", {**OPENAI, "api_base": f"{sim.url}/v1"}),
            ],
        ),
        allow_unlisted=False,
    )
    request = JobRequest(model="g", messages=messages, options={})
    declined = completer._lean.declines(Target("g", routed=True), request)  # the path's own answer
    assert declined is not None
    assert reason in declined
    events = await answer(completer, "g", messages)
    assert isinstance(events[-1], Answered)
    (received,) = sim.requests(provider="gemini")
    assert "aiohttp" not in (received.header("user-agent") or ""), "LiteLLM's client sent it"
    # The same job for an OpenAI model stays lean: OpenAI reads tool history and caches itself.
    events = await answer(completer, "o", messages)
    assert isinstance(events[-1], Answered)
    (received,) = sim.requests(provider="openai")
    assert "aiohttp" in (received.header("user-agent") or "")
    await completer.aclose()


async def test_a_remote_image_for_gemini_or_bedrock_is_left_to_litellm(tmp_path: Path) -> None:
    completer = Completer(
        catalog(tmp_path, [("g", GEMINI), ("b", BEDROCK), ("o", OPENAI)]), allow_unlisted=False
    )
    image = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
        }
    ]
    inline = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
        }
    ]
    for model, messages, lean in (("g", image, False), ("b", image, False), ("o", image, True),
                                  ("g", inline, True), ("b", inline, True)):  # fmt: skip
        request = JobRequest(model=model, messages=messages, options={})
        assert (completer._lean.declines(Target(model, routed=True), request) is None) is lean, (
            model
        )
    await completer.aclose()
