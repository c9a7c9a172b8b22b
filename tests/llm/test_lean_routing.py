"""The lean path routes as LiteLLM's Router does: the same failures cool down the same
deployments, and the same fallbacks answer. Each case runs twice against the simulator in
this process: once through the Router's own `acompletion` stream, once through the lean path
with the same models file, and the Router's state is compared."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulator import Simulator, SimulatorConfig
from worker.errors import JobError
from worker.jobs import JobRequest
from worker.llm.catalog import ModelCatalog
from worker.llm.completer import Completer
from worker.llm.events import Answered, Routed, StreamEvent, TextDelta
from worker.llm.target import Target

KEY = "sk-routing-test-0123456789abcdef"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=6, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


def models(tmp_path: Path, url: str, **router_settings: Any) -> ModelCatalog:
    openai = {"model": "openai/gpt-4o-mini", "api_base": f"{url}/v1", "api_key": KEY}
    azure = {
        "model": "azure/gpt-4o-prod",
        "api_base": url,
        "api_key": KEY,
        "api_version": "2024-10-21",
    }
    gemini = {"model": "gemini/gemini-3.5-flash", "api_base": url, "api_key": KEY}
    document = {
        "model_list": [
            # The Router's shuffle weighs by `weight`: the first pick is the OpenAI deployment.
            {"model_name": "chat", "litellm_params": {**openai, "weight": 1000}},
            {"model_name": "chat", "litellm_params": {**azure, "weight": 1}},
            {"model_name": "backup", "litellm_params": gemini},
        ],
        "router_settings": {"disable_cooldowns": False, "cooldown_time": 30,
                            "fallbacks": [{"chat": ["backup"]}], **router_settings},
    }  # fmt: skip
    path = tmp_path / f"models-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return ModelCatalog.load(path)


async def run(completer: Completer, prompt: str) -> tuple[list[StreamEvent], JobError | None]:
    request = JobRequest(model="chat", messages=[{"role": "user", "content": prompt}], options={})
    events: list[StreamEvent] = []
    try:
        async for event in completer.stream(Target("chat", routed=True), request):
            events.append(event)
    except JobError as error:
        return events, error
    finally:
        # The Router records a stream's failure in a task of its own: let it land, as it does
        # between jobs that are not microseconds apart.
        await asyncio.sleep(0.05)
    return events, None


def cooling(completer: Completer) -> set[str]:
    router = completer._routed._router  # the Router's own state is the subject
    ids = ["chat#0", "chat#1", "backup#2"]
    return {model_id for model_id, _ in router.health().cooldowns.get_active_cooldowns(ids, None)}


def force_router_path(completer: Completer) -> None:
    completer._lean._names = frozenset()  # the same file, streamed by LiteLLM


@pytest.mark.parametrize("status", [429, 401])
async def test_a_failed_deployment_cools_down_and_the_fallback_answers_as_with_the_router(
    tmp_path: Path, sim: Simulator, status: int
) -> None:
    outcomes = {}
    for path in ("router", "lean"):
        completer = Completer(models(tmp_path, sim.url), allow_unlisted=False)
        if path == "router":
            force_router_path(completer)
        tag = f"{path} {uuid.uuid4().hex[:6]}"
        failing = f"Fails on OpenAI {tag} [[sim status={status} retry_after=30 only=openai]]"
        first, error = await run(completer, failing)
        assert error is None, error
        answered = first[-1]
        assert isinstance(answered, Answered)
        after = [await run(completer, f"{failing} again {n}") for n in range(3)]
        outcomes[path] = {
            "first": (answered.provider, answered.model_id),
            "cooling": cooling(completer),
            "after": [
                (events[-1].model_id, error)
                for events, error in after
                if isinstance(events[-1], Answered)
            ],
            "openai_requests": len(sim.requests(provider="openai", prompt=failing)),
        }
        await completer.aclose()
    assert outcomes["lean"] == outcomes["router"]
    # ... and what the Router did: the OpenAI deployment failed once, cooled down, and its
    # model's other deployment took every later job; the first one fell back to `backup`.
    assert outcomes["lean"]["first"] == ("gemini", "backup#2")
    assert outcomes["lean"]["cooling"] == {"chat#0"}
    assert outcomes["lean"]["after"] == [("chat#1", None)] * 3
    assert outcomes["lean"]["openai_requests"] == 1


async def test_a_500_counts_against_allowed_fails_before_a_cooldown_as_with_the_router(
    tmp_path: Path, sim: Simulator
) -> None:
    outcomes = {}
    for path in ("router", "lean"):
        completer = Completer(models(tmp_path, sim.url, allowed_fails=1), allow_unlisted=False)
        if path == "router":
            force_router_path(completer)
        failing = f"Server error {path} {uuid.uuid4().hex[:6]} [[sim status=500 only=openai]]"
        seen = []
        for n in range(4):
            events, error = await run(completer, f"{failing} {n}")
            assert error is None, error
            answered = events[-1]
            assert isinstance(answered, Answered)
            seen.append((answered.model_id, sorted(cooling(completer))))
        outcomes[path] = seen
        await completer.aclose()
    assert outcomes["lean"] == outcomes["router"], outcomes
    # One failure is allowed; the second cools the deployment down; both fell back.
    assert outcomes["lean"] == [
        ("backup#2", []), ("backup#2", ["chat#0"]), ("chat#1", ["chat#0"]), ("chat#1", ["chat#0"]),
    ]  # fmt: skip


async def test_text_already_streamed_is_not_continued_by_a_fallback(
    tmp_path: Path, sim: Simulator
) -> None:
    completer = Completer(models(tmp_path, sim.url), allow_unlisted=False)
    events, error = await run(
        completer, f"Cut late {uuid.uuid4().hex[:6]} [[sim drop_after=2 only=openai]]"
    )
    assert error is not None
    assert error.code.value == "provider_unavailable"
    assert [type(e) for e in events] == [Routed, TextDelta, TextDelta]
    assert sim.requests(provider="gemini") == []
    await completer.aclose()
