"""No URL a job names is fetched by the worker (contract section 8): a trap server on this
machine must see no request, whatever LiteLLM would download for the provider."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest
import yaml
from aiohttp import web

from simulator import Simulator, SimulatorConfig
from tests.conftest import StartWorker, row
from tests.support import free_port

GEMINI_KEY = "AIzaFakeGeminiKey-media-0123456789ab"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6"


@pytest.fixture
async def trap() -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1 that records every request it gets (it must get none)."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, seen
    await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(tokens=8, tokens_per_s=0, ttft_s=0)) as simulator:
        yield simulator


def models(path: Path, sim_url: str) -> str:
    entries = [
        ("gemini", {"model": "gemini/gemini-2.0-flash", "api_base": sim_url,
                    "api_key": "os.environ/GEMINI_API_KEY"}),
        ("bedrock", {"model": f"bedrock/{BEDROCK_MODEL}",
                     "aws_bedrock_runtime_endpoint": sim_url, "aws_region_name": "eu-west-3"}),
        ("gpt", {"model": "openai/gpt-4o-mini", "api_base": f"{sim_url}/v1",
                 "api_key": "os.environ/SIM_API_KEY"}),
    ]  # fmt: skip
    model_list = [{"model_name": name, "litellm_params": params} for name, params in entries]
    path.write_text(yaml.safe_dump({"model_list": model_list}), encoding="utf-8")
    return str(path)


def image_job(model: str, url: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": f"What is in this picture? {uuid.uuid4()}"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("allowed", ["", "127.0.0.1,localhost,::1"], ids=["unlisted", "listed"])
async def test_no_job_makes_the_worker_fetch_a_url(
    db: asyncpg.Connection,
    submit: Any,
    sim: Simulator,
    trap: tuple[int, list[str]],
    start_worker: StartWorker,
    tmp_path: Path,
    allowed: str,
) -> None:
    port, seen = trap
    urls = [
        f"http://127.0.0.1:{port}/cat.png",
        f"http://localhost:{port}/dog.png",
        f"http://[::1]:{port}/fish.png",
    ]
    fetching = {
        await submit(image_job(model, url)): url for model in ("gemini", "bedrock") for url in urls
    }
    # OpenAI fetches URLs itself: the URL reaches the provider as given, the worker never.
    passed_on = await submit(image_job("gpt", urls[0]))
    worker = start_worker(
        "--drain",
        WORKER_MODELS_FILE=models(tmp_path / "models.yaml", sim.url),
        WORKER_MEDIA_URL_HOSTS=allowed,
        GEMINI_API_KEY=GEMINI_KEY,
    )
    assert await worker.wait() == 1, worker.output

    for job_id, url in fetching.items():
        record = await row(db, job_id)
        assert (record["status"], record["error_code"]) == ("failed", "invalid_request")
        assert "messages.0.content.1" in record["error_message"], record["error_message"]
        host = urlsplit(url).hostname
        assert host is not None
        assert host in record["error_message"], record["error_message"]
    assert sim.requests(provider="gemini") == []
    assert sim.requests(provider="bedrock") == []
    assert (await row(db, passed_on))["status"] == "completed"
    [received] = sim.requests(provider="openai")
    assert json.dumps(received.body).count(urls[0]) == 1
    assert seen == []
