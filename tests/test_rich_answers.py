"""Rich answers through the worker process, on each provider's own wire format (contract
section 8): reasoning, tool calls and content-filter stops, every byte checked."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest
import yaml

from simulator import (
    Simulator,
    SimulatorConfig,
    answer_tokens,
    expected_reasoning,
    expected_tool_calls,
)
from tests.conftest import StartWorker, row
from tests.support import eventually

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6"
AZURE_API_VERSION = "2024-10-21"
PROVIDERS = ("openai", "azure", "gemini", "bedrock")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=10, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


def models_file(path: Path, url: str) -> str:
    entries = {
        "openai": {"model": "openai/gpt-4o-mini", "api_base": f"{url}/v1", "api_key": "sk-x"},
        "azure": {"model": "azure/gpt-4o-prod", "api_base": url, "api_key": "azure-x",
                  "api_version": AZURE_API_VERSION},
        "gemini": {"model": "gemini/gemini-2.5-flash", "api_base": url,
                   "api_key": "AIzaFake-rich-0123456789abcdefgh"},
        "bedrock": {"model": f"bedrock/{BEDROCK_MODEL}", "aws_bedrock_runtime_endpoint": url,
                    "aws_region_name": "eu-west-3"},
    }  # fmt: skip
    model_list = [{"model_name": name, "litellm_params": p} for name, p in entries.items()]
    path.write_text(yaml.safe_dump({"model_list": model_list}), encoding="utf-8")
    return str(path)


def job(model: str, prompt: str, **options: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "options": options}


async def run_jobs(
    jobs: dict[str, dict[str, Any]],
    *,
    submit: Any,
    sim: Simulator,
    start_worker: StartWorker,
    tmp_path: Path,
    **env: str,
) -> dict[str, uuid.UUID]:
    ids = {name: await submit(request) for name, request in jobs.items()}
    worker = start_worker(
        "--drain", WORKER_MODELS_FILE=models_file(tmp_path / "models.yaml", sim.url), **env
    )
    await worker.wait(timeout_s=90)
    return ids


async def deltas(db: asyncpg.Connection, job_id: uuid.UUID) -> tuple[str, str]:
    rows = await db.fetch(
        "SELECT content, reasoning FROM ai_streaming_job_deltas WHERE job_id = $1"
        " ORDER BY attempt, seq",
        job_id,
    )
    return "".join(r["content"] for r in rows), "".join(r["reasoning"] or "" for r in rows)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reasoning_goes_beside_the_answer_never_into_it(
    provider: str,
    db: asyncpg.Connection,
    submit: Any,
    sim: Simulator,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    shown = "reasoning_style=reasoning_content"
    prompt = f"Think first {uuid.uuid4()} [[sim reasoning=12 {shown}]]"
    messages = [{"role": "user", "content": prompt}]
    ids = await run_jobs(
        {"thinking": job(provider, prompt)},
        submit=submit,
        sim=sim,
        start_worker=start_worker,
        tmp_path=tmp_path,
    )
    record = await row(db, ids["thinking"])
    answer, reasoning = "".join(answer_tokens(messages, 10)), expected_reasoning(messages, 12)
    assert record["status"] == "completed", record["error_message"]
    assert record["partial_content"] == answer
    assert record["reasoning_content"] == reasoning
    assert await deltas(db, ids["thinking"]) == (answer, reasoning)
    response = json.loads(record["response_data"])
    assert response["message"]["content"] == answer
    assert response["message"]["reasoning_content"] == reasoning
    assert response["parts"] == [
        {"type": "reasoning", "text": reasoning},
        {"type": "text", "text": answer},
    ]
    # Bedrock reports thinking tokens only when the request asks for them (`thinking`).
    reported = response["usage"].get("reasoning_tokens")
    assert reported == 12 if provider != "bedrock" else reported in (None, 12)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_of_tool_calls_completes_with_them_assembled(
    provider: str,
    db: asyncpg.Connection,
    submit: Any,
    sim: Simulator,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    prompt = f"Weather in two places {uuid.uuid4()} [[sim tools=2 tool_chunks=4]]"
    messages = [{"role": "user", "content": prompt}]
    ids = await run_jobs(
        {"tools": job(provider, prompt, tools=[WEATHER])},
        submit=submit,
        sim=sim,
        start_worker=start_worker,
        tmp_path=tmp_path,
    )
    record = await row(db, ids["tools"])
    assert record["status"] == "completed", record["error_message"]
    response = json.loads(record["response_data"])
    assert response["finish_reason"] == "tool_calls"
    expected = expected_tool_calls(messages, [WEATHER], provider=provider)
    calls = response["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (call.name, json.loads(call.arguments)) for call in expected
    ]
    assert all(c["id"] and c["type"] == "function" for c in calls)
    assert response["message"]["content"] is None
    assert response["parts"] == [
        {
            "type": "tool-get_weather",
            "toolCallId": call["id"],
            "state": "input-available",
            "input": json.loads(call["function"]["arguments"]),
        }
        for call in calls
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_content_filter_stop_fails_the_job_with_the_text_so_far(
    provider: str,
    db: asyncpg.Connection,
    submit: Any,
    sim: Simulator,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    prompt = f"Something the filter dislikes {uuid.uuid4()} [[sim filter_after=3]]"
    messages = [{"role": "user", "content": prompt}]
    ids = await run_jobs(
        {"filtered": job(provider, prompt)},
        submit=submit,
        sim=sim,
        start_worker=start_worker,
        tmp_path=tmp_path,
    )
    record = await row(db, ids["filtered"])
    assert (record["status"], record["error_code"]) == ("failed", "content_filtered")
    so_far = "".join(answer_tokens(messages, 10)[:3])
    assert record["partial_content"] == so_far
    assert (await deltas(db, ids["filtered"]))[0] == so_far
    assert json.loads(record["response_data"])["finish_reason"] == "content_filter"


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
async def test_a_model_thinking_longer_than_the_first_token_timeout_is_asked_once(
    provider: str,
    db: asyncpg.Connection,
    submit: Any,
    sim: Simulator,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    prompt = (
        f"Think long {uuid.uuid4()} [[sim reasoning=8 think_s=4 reasoning_style=reasoning_content]]"
    )
    ids = await run_jobs(
        {"slow": job(provider, prompt)},
        submit=submit,
        sim=sim,
        start_worker=start_worker,
        tmp_path=tmp_path,
        WORKER_FIRST_TOKEN_TIMEOUT_S="2",
    )

    async def done() -> bool:
        return bool((await row(db, ids["slow"]))["status"] == "completed")

    await eventually(done, timeout_s=10, what="the thinker completed")
    assert len(sim.requests(provider=provider, prompt=prompt)) == 1
