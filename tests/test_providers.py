"""Each provider through the whole worker, against the simulator speaking its real wire format.

A job row and an SQS message go in; a worker process streams the answer through LiteLLM's own
HTTP code for that provider (OpenAI, Azure OpenAI, Gemini, Bedrock ConverseStream) from the
simulator, in this process on a free port and demanding each provider's own key; the test reads
the row, as the app does, and what the simulator received on that provider's route.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import pytest
import yaml

from simulator import Received, Simulator, SimulatorConfig, answer_tokens, count_prompt_tokens
from simulator.bedrock import credential_scope
from simulator.rich import expected_reasoning, expected_tool_calls, thought_signature
from tests.conftest import AWS_ENV, StartWorker, deltas_text, row
from tests.support import REPO
from worker.llm import ModelCatalog, ModelsFileError

OPENAI_KEY = "sk-fake-openai-0123456789abcdefXYZ"
AZURE_KEY = "fake-azure-key-0123456789abcdef"
GEMINI_KEY = "AIzaFakeGeminiKey-0123456789abcdefgh"
WRONG_KEY = "sk-wrong-key-9876543210fedcbaWRONG"
WRONG_AWS_KEY_ID = "AKIAWRONGKEYID000000"
WRONG_AWS_SECRET = "wrong/aws/secret/0123456789abcdefghijKLMN"
AZURE_API_VERSION = "2024-10-21"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6"
BEDROCK_REGION = "eu-west-3"
SECRETS = (OPENAI_KEY, AZURE_KEY, GEMINI_KEY, WRONG_KEY, WRONG_AWS_SECRET)
DEFAULT_TOKENS = 24
# Every answer ends in 3- and 4-byte UTF-8, so that every provider's path is tested with them.
ENDING = " 日本語🚀"
# Each route demands its provider's key (Bedrock: the worker's access key id and region).
SIMULATOR = SimulatorConfig(
    tokens=DEFAULT_TOKENS,
    tokens_per_s=0,
    ttft_s=0,
    answer_ending=ENDING,
    openai_key=OPENAI_KEY,
    azure_key=AZURE_KEY,
    gemini_key=GEMINI_KEY,
    bedrock_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
    bedrock_region=BEDROCK_REGION,
)


def answer_for(prompt: str, tokens: int = DEFAULT_TOKENS) -> list[str]:
    """The tokens the simulator streams for `prompt`, on every provider's route."""
    return answer_tokens([{"role": "user", "content": prompt}], tokens, ending=ENDING)


def expected_answer(prompt: str, tokens: int = DEFAULT_TOKENS) -> str:
    """The text the simulator streams for `prompt` (when nothing cuts it short)."""
    return "".join(answer_for(prompt, tokens))


def prompt_tokens(prompt: str) -> int:
    """The prompt token count the simulator reports (words, so tests can predict it)."""
    return count_prompt_tokens([{"role": "user", "content": prompt}])


# Connection settings a job tries to choose; none of them may reach a provider.
JOB_CONNECTION_OPTIONS = {
    "api_base": "http://127.0.0.1:9/job-chosen-base",
    "base_url": "http://127.0.0.1:9/job-chosen-base",
    "api_key": "sk-job-supplied-key-000000000000",
    "api_version": "1999-01-01",
    "extra_headers": {"X-Job-Header": "job-header-value"},
    "aws_access_key_id": "AKIAJOBSUPPLIED00000",
    "aws_region_name": "ap-south-1",
}
JOB_VALUES = ("job-chosen-base", "sk-job-supplied-key", "1999-01-01", "x-job-header",
              "job-header-value", "AKIAJOBSUPPLIED00000", "ap-south-1")  # fmt: skip


@dataclass(frozen=True)
class Provider:
    """How one provider is configured in the models file and what its requests must carry."""

    name: str
    model_name: str
    reported_model: str
    params: Callable[[str], dict[str, Any]]
    wrong_key: dict[str, str]
    env: Callable[[str], dict[str, str]]
    check_request: Callable[[Received], None]
    temperature: Callable[[dict[str, Any]], object]
    legacy_provider: str


def _check_openai(received: Received) -> None:
    assert received.path == "/v1/chat/completions"
    assert received.header("authorization") == f"Bearer {OPENAI_KEY}"


def _check_azure(received: Received) -> None:
    assert received.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert received.query == {"api-version": AZURE_API_VERSION}
    assert received.header("api-key") == AZURE_KEY
    assert received.header("authorization") is None


def _check_gemini(received: Received) -> None:
    assert received.path == "/models/gemini-3.5-flash:streamGenerateContent"
    assert received.query == {"alt": "sse"}
    assert received.header("x-goog-api-key") == GEMINI_KEY


def _check_bedrock(received: Received) -> None:
    assert received.raw_path == f"/model/{BEDROCK_MODEL}/converse-stream"
    scope = credential_scope(received.header("authorization"))
    assert scope is not None, received.header("authorization")
    assert (scope["key_id"], scope["region"]) == (AWS_ENV["AWS_ACCESS_KEY_ID"], BEDROCK_REGION)


PROVIDERS = [
    Provider(
        name="openai",
        legacy_provider="openai",
        model_name="gpt-4o-mini",
        reported_model="gpt-4o-mini-2024-07-18",
        params=lambda url: {
            "model": "openai/gpt-4o-mini",
            "api_base": f"{url}/v1",
            "api_key": "os.environ/OPENAI_API_KEY",
        },
        wrong_key={"api_key": "os.environ/WRONG_API_KEY"},
        env=lambda _: {"OPENAI_API_KEY": OPENAI_KEY},
        check_request=_check_openai,
        temperature=lambda body: body.get("temperature"),
    ),
    Provider(
        name="azure",
        legacy_provider="azure",
        model_name="gpt-4o-azure",
        reported_model="gpt-4o-2024-08-06",
        params=lambda _: {
            "model": "azure/gpt-4o-prod",
            "api_base": "os.environ/AZURE_API_BASE",
            "api_key": "os.environ/AZURE_API_KEY",
            "api_version": "os.environ/AZURE_API_VERSION",
        },
        wrong_key={"api_key": "os.environ/WRONG_API_KEY"},
        env=lambda url: {
            "AZURE_API_BASE": url,
            "AZURE_API_KEY": AZURE_KEY,
            "AZURE_API_VERSION": AZURE_API_VERSION,
        },
        check_request=_check_azure,
        temperature=lambda body: body.get("temperature"),
    ),
    Provider(
        name="gemini",
        legacy_provider="google",
        model_name="gemini-3.5-flash",
        reported_model="gemini-3.5-flash",
        params=lambda url: {
            "model": "gemini/gemini-3.5-flash",
            "api_base": url,
            "api_key": "os.environ/GEMINI_API_KEY",
        },
        wrong_key={"api_key": "os.environ/WRONG_API_KEY"},
        env=lambda _: {"GEMINI_API_KEY": GEMINI_KEY},
        check_request=_check_gemini,
        temperature=lambda body: body.get("generationConfig", {}).get("temperature"),
    ),
    Provider(
        name="bedrock",
        legacy_provider="amazon-bedrock",
        model_name="claude-sonnet",
        reported_model=BEDROCK_MODEL,
        # Credentials come from the AWS chain: the worker's AWS_ACCESS_KEY_ID.
        params=lambda url: {
            "model": f"bedrock/{BEDROCK_MODEL}",
            "aws_bedrock_runtime_endpoint": url,
            "aws_region_name": BEDROCK_REGION,
        },
        wrong_key={
            "aws_access_key_id": "os.environ/WRONG_AWS_KEY_ID",
            "aws_secret_access_key": "os.environ/WRONG_AWS_SECRET",
        },
        env=lambda _: {},
        check_request=_check_bedrock,
        temperature=lambda body: body.get("inferenceConfig", {}).get("temperature"),
    ),
]
BY_NAME = {provider.name: provider for provider in PROVIDERS}
WORKER_ENV = {
    "WRONG_API_KEY": WRONG_KEY,
    "WRONG_AWS_KEY_ID": WRONG_AWS_KEY_ID,
    "WRONG_AWS_SECRET": WRONG_AWS_SECRET,
    "WORKER_MAX_ATTEMPTS": "2",
    "WORKER_PROVIDER_RETRIES": "3",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The simulator in this process, on a free port, serving every provider's routes."""
    async with Simulator(SIMULATOR) as simulator:
        yield simulator


def write_models(
    path: Path, entries: list[tuple[str, dict[str, Any]]], **router_settings: Any
) -> str:
    model_list = [{"model_name": name, "litellm_params": params} for name, params in entries]
    path.write_text(
        yaml.safe_dump({"model_list": model_list, "router_settings": router_settings}),
        encoding="utf-8",
    )
    return str(path)


def chat(prompt: str, model: str, **options: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "options": options}


@dataclass(frozen=True)
class Job:
    status: str
    text: str
    attempts: int
    error_code: str | None
    error_message: str | None
    response: dict[str, Any]


async def job(db: asyncpg.Connection, job_id: uuid.UUID) -> Job:
    record = await row(db, job_id)
    return Job(
        status=record["status"],
        text=record["partial_content"],
        attempts=record["attempts"],
        error_code=record["error_code"],
        error_message=record["error_message"],
        response=json.loads(record["response_data"] or "{}"),
    )


def log_events(output: str, name: str) -> list[dict[str, Any]]:
    """The worker's log events called `name`, in order."""
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [event for event in events if event.get("event") == name]


def model_paths(output: str) -> dict[str, str]:
    """Which path each model name streams on, as the worker said at start."""
    return {event["model"]: event["path"] for event in log_events(output, "model_path")}


def assert_no_secret(*texts: str | None) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in (text or ""), "a secret leaked"


@dataclass
class Scenario:
    """One provider's jobs in a shared worker run: what was asked, and the row ids."""

    provider: Provider
    sim: Simulator
    prompts: dict[str, str]
    ids: dict[str, uuid.UUID]


async def submit_scenario(submit: Any, provider: Provider, sim: Simulator) -> Scenario:
    tag = f"{provider.name} {uuid.uuid4().hex[:8]}"
    prompts = {
        "ok": f"Say hello in five languages {tag}",
        "legacy": f"Old app format {tag}",
        "unlisted": f"Raw model string {tag}",
        "length": f"Count slowly {tag}",
        "throttled": f"Busy {tag} [[sim status=429 retry_after=0.2 times=1]]",
        "refused": f"Locked {tag} [[sim status=401]]",
        "wrong_key": f"Wrong key {tag}",
        "early_break": f"Shaky start {tag} [[sim drop_after=0 times=1]]",
        "break_once": f"Flaky {tag} [[sim drop_after=3 times=1]]",
        "break_always": f"Broken {tag} [[sim drop_after=3]]",
    }
    name = provider.model_name
    requests = {
        "ok": chat(prompts["ok"], name, temperature=0.2, **JOB_CONNECTION_OPTIONS),
        "legacy": {
            "provider": provider.legacy_provider,
            "modelId": name,
            "messages": [{"role": "user", "content": prompts["legacy"]}],
        },
        # Not in the models file, and unlisted models are not allowed here.
        "unlisted": chat(prompts["unlisted"], str(provider.params(sim.url)["model"])),
        "length": chat(prompts["length"], name, max_tokens=5),
        "wrong_key": chat(prompts["wrong_key"], f"{name}-wrong-key"),
    }
    ids = {kind: await submit(request) for kind, request in requests.items()}
    for kind in ("throttled", "refused", "early_break", "break_once", "break_always"):
        ids[kind] = await submit(chat(prompts[kind], name))
    return Scenario(provider, sim, prompts, ids)


async def check_scenario(db: asyncpg.Connection, scenario: Scenario) -> None:
    provider, prompts, ids = scenario.provider, scenario.prompts, scenario.ids
    jobs = {kind: await job(db, job_id) for kind, job_id in ids.items()}
    sent = {
        kind: scenario.sim.requests(provider=provider.name, prompt=prompt)
        for kind, prompt in prompts.items()
    }

    # The answer, byte for byte, with the provider's usage, model and finish reason.
    ok = jobs["ok"]
    assert (ok.status, ok.attempts) == ("completed", 1), ok.error_message
    assert ok.text == expected_answer(prompts["ok"])
    assert "日本語🚀" in ok.text
    assert await deltas_text(db, ids["ok"], 1) == ok.text
    prompt_count = prompt_tokens(prompts["ok"])
    assert ok.response["usage"] == {
        "prompt_tokens": prompt_count,
        "completion_tokens": DEFAULT_TOKENS,
        "total_tokens": prompt_count + DEFAULT_TOKENS,
    }
    assert ok.response["provider"] == provider.name
    assert ok.response["model"] == provider.reported_model
    assert ok.response["finish_reason"] == "stop"
    assert isinstance(ok.response["cost_usd"], float), "a model in LiteLLM's prices is costed"
    assert ok.response["cost_usd"] > 0

    # The request carried the operator's key and region and the job's generation options,
    # and none of the connection settings the job tried to choose.
    (request,) = sent["ok"]
    provider.check_request(request)
    assert provider.temperature(request.body) == 0.2
    for value in JOB_VALUES:
        assert value.lower() not in request.wire.lower(), f"{value} reached the provider"

    # The app's older format names the same models-file entry; a raw LiteLLM string does
    # not get through unless the operator allows unlisted models.
    legacy = jobs["legacy"]
    assert legacy.status == "completed", legacy.error_message
    assert legacy.text == expected_answer(prompts["legacy"])
    unlisted = jobs["unlisted"]
    assert (unlisted.status, unlisted.error_code) == ("failed", "unknown_model")
    assert sent["unlisted"] == []

    length = jobs["length"]
    assert length.status == "completed", length.error_message
    assert length.text == "".join(answer_for(prompts["length"])[:5])
    assert length.response["finish_reason"] == "length"

    # A 429 is retried within the attempt and the job completes.
    throttled = jobs["throttled"]
    assert (throttled.status, throttled.attempts) == ("completed", 1), throttled.error_message
    assert throttled.text == expected_answer(prompts["throttled"])
    assert len(sent["throttled"]) == 2

    # A refused key fails at once with `auth`, whatever status the provider uses for it.
    for kind in ("refused", "wrong_key"):
        failed = jobs[kind]
        assert (failed.status, failed.error_code) == ("failed", "auth"), failed.error_message
        assert len(sent[kind]) == 1, f"{kind}: auth errors must not be retried"
        assert_no_secret(failed.error_message)

    # A break before the first token is retried inside the attempt ...
    early = jobs["early_break"]
    assert (early.status, early.attempts) == ("completed", 1), early.error_message
    assert early.text == expected_answer(prompts["early_break"])
    assert len(sent["early_break"]) == 2

    # ... a break after text restarts the attempt from empty text ...
    once = jobs["break_once"]
    assert (once.status, once.attempts) == ("completed", 2), once.error_message
    assert once.text == expected_answer(prompts["break_once"])
    assert await deltas_text(db, ids["break_once"], 2) == once.text
    assert len(sent["break_once"]) == 2

    # ... and a stream that keeps breaking fails as unavailable after the last attempt.
    broken = jobs["break_always"]
    assert (broken.status, broken.attempts) == ("failed", 2)
    assert broken.error_code == "provider_unavailable"
    assert len(sent["break_always"]) == 2


async def test_each_provider_through_the_worker(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    """OpenAI, Azure, Gemini and Bedrock side by side in one worker (one start, not four),
    all from one simulator."""
    entries: list[tuple[str, dict[str, Any]]] = []
    env: dict[str, str] = {}
    scenarios = []
    for provider in PROVIDERS:
        params = provider.params(sim.url)
        entries += [
            (provider.model_name, params),
            (f"{provider.model_name}-wrong-key", {**params, **provider.wrong_key}),
        ]
        env |= provider.env(sim.url)
        scenarios.append(await submit_scenario(submit, provider, sim))
    # The Router cools a deployment down after a 401; the other jobs wait it out.
    models = write_models(tmp_path / "models.yaml", entries, cooldown_time=1)

    worker = start_worker("--drain", WORKER_MODELS_FILE=models, **WORKER_ENV, **env)
    assert await worker.wait(45) == 1, worker.output  # some jobs must fail

    failures = {}
    for scenario in scenarios:
        try:
            await check_scenario(db, scenario)
        except AssertionError as error:
            failures[scenario.provider.name] = str(error)
    assert not failures, json.dumps(failures, indent=2, ensure_ascii=False)
    assert_no_secret(worker.output)
    assert "Traceback" not in worker.output
    # Every provider's model streamed on its lean reader, routed by LiteLLM's Router.
    assert model_paths(worker.output) == {name: "lean" for name, _ in entries}


async def test_fallback_answers_when_the_primary_fails_before_the_first_token(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    models = write_models(
        tmp_path / "models.yaml",
        [
            ("gpt-4o-mini", BY_NAME["openai"].params(sim.url)),
            ("gemini-3.5-flash", BY_NAME["gemini"].params(sim.url)),
        ],
        fallbacks=[{"gpt-4o-mini": ["gemini-3.5-flash"]}],
    )
    tag = uuid.uuid4().hex[:8]
    prompts = {
        "down": f"Primary down {tag} [[sim status=503 only=openai]]",
        "throttled": f"Primary throttled {tag} [[sim status=429 retry_after=0.2 only=openai]]",
        "cut_before_text": f"Primary cut early {tag} [[sim drop_after=0 only=openai]]",
        "cut_after_text": f"Primary cut late {tag} [[sim drop_after=3 times=1 only=openai]]",
        "healthy": f"Primary fine {tag}",
    }
    ids = {kind: await submit(chat(prompt, "gpt-4o-mini")) for kind, prompt in prompts.items()}
    worker = start_worker(
        "--drain", WORKER_MODELS_FILE=models, OPENAI_API_KEY=OPENAI_KEY, GEMINI_API_KEY=GEMINI_KEY
    )
    assert await worker.wait(30) == 0, worker.output
    assert model_paths(worker.output) == {"gpt-4o-mini": "lean", "gemini-3.5-flash": "lean"}

    for kind in ("down", "throttled", "cut_before_text"):
        answered = await job(db, ids[kind])
        assert (answered.status, answered.attempts) == ("completed", 1), kind
        assert answered.text == expected_answer(prompts[kind]), kind
        assert answered.response["model"] == "gemini-3.5-flash", kind
        assert answered.response["provider"] == "gemini", kind
        assert answered.response["usage"]["completion_tokens"] == DEFAULT_TOKENS
        assert answered.response["cost_usd"] > 0, "priced as the fallback's model"
        assert len(sim.requests(provider="openai", prompt=prompts[kind])) == 1, kind
        assert len(sim.requests(provider="gemini", prompt=prompts[kind])) == 1, kind

    # Text already streamed is never continued by another model: the attempt restarts
    # and the primary, healthy again, answers the whole text.
    restarted = await job(db, ids["cut_after_text"])
    assert (restarted.status, restarted.attempts) == ("completed", 2)
    assert restarted.text == expected_answer(prompts["cut_after_text"])
    assert restarted.response["provider"] == "openai"
    assert sim.requests(provider="gemini", prompt=prompts["cut_after_text"]) == []

    healthy = await job(db, ids["healthy"])
    assert healthy.status == "completed"
    assert healthy.response["model"] == "gpt-4o-mini-2024-07-18"
    assert healthy.response["provider"] == "openai"
    assert sim.requests(provider="gemini", prompt=prompts["healthy"]) == []


async def test_a_model_of_two_deployments_cools_a_failed_one_down_and_falls_back(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    """The Router's own behaviour on the lean path: one model served by an OpenAI and an Azure
    deployment, with a fallback. OpenAI throttles: its one failed call falls back, the Router
    cools it down, and every later job goes to the Azure deployment while it is cooling."""
    models = write_models(
        tmp_path / "models.yaml",
        [
            # The Router's shuffle weighs by `weight`: its first pick is the OpenAI deployment.
            ("chat", {**BY_NAME["openai"].params(sim.url), "weight": 1000}),
            ("chat", {**BY_NAME["azure"].params(sim.url), "weight": 1}),
            ("gemini-3.5-flash", BY_NAME["gemini"].params(sim.url)),
        ],
        fallbacks=[{"chat": ["gemini-3.5-flash"]}],
        disable_cooldowns=False,
        cooldown_time=60,
    )
    tag = uuid.uuid4().hex[:8]
    prompts = [
        f"Busy OpenAI {n} {tag} [[sim status=429 retry_after=60 only=openai]]" for n in range(5)
    ]
    ids = [await submit(chat(prompt, "chat")) for prompt in prompts]
    worker = start_worker(
        "--drain",
        WORKER_MODELS_FILE=models,
        WORKER_CONCURRENCY="1",
        **BY_NAME["openai"].env(sim.url),
        **BY_NAME["azure"].env(sim.url),
        **BY_NAME["gemini"].env(sim.url),
    )
    assert await worker.wait(30) == 0, worker.output
    assert model_paths(worker.output) == {"chat": "lean", "gemini-3.5-flash": "lean"}

    jobs = [await job(db, job_id) for job_id in ids]
    for answered, prompt in zip(jobs, prompts, strict=True):
        assert (answered.status, answered.attempts) == ("completed", 1), answered.error_message
        assert answered.text == expected_answer(prompt)
    openai_calls = [p for p in prompts if sim.requests(provider="openai", prompt=p)]
    assert len(openai_calls) == 1, "the throttled deployment was called once, then cooled down"
    (first,) = openai_calls
    assert [job.response["provider"] for job in jobs] == [
        "gemini" if prompt == first else "azure" for prompt in prompts
    ]
    cooled = log_events(worker.output, "deployment_cooled_down")
    assert [(event["deployment"], event["status"]) for event in cooled] == [("chat#0", 429)]
    assert '"provider_retry"' not in worker.output


async def test_settings_only_litellm_applies_keep_a_model_on_the_routers_wrapper(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    models = write_models(
        tmp_path / "models.yaml",
        [
            ("headers", {**BY_NAME["openai"].params(sim.url), "extra_headers": {"X-Team": "a"}}),
            ("gpt-4o-mini", BY_NAME["openai"].params(sim.url)),
        ],
    )
    prompt = f"Through LiteLLM {uuid.uuid4().hex[:8]}"
    job_id = await submit(chat(prompt, "headers"))
    worker = start_worker("--drain", WORKER_MODELS_FILE=models, OPENAI_API_KEY=OPENAI_KEY)
    assert await worker.wait(30) == 0, worker.output
    paths = {event["model"]: event for event in log_events(worker.output, "model_path")}
    assert (paths["headers"]["path"], paths["gpt-4o-mini"]["path"]) == ("router", "lean")
    assert "extra_headers" in paths["headers"]["reason"]
    answered = await job(db, job_id)
    assert answered.status == "completed"
    assert answered.text == expected_answer(prompt)
    (request,) = sim.requests(provider="openai", prompt=prompt)
    assert request.header("x-team") == "a"


async def test_a_provider_at_its_limit_makes_its_jobs_wait_while_others_go_through(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    models = write_models(
        tmp_path / "models.yaml",
        [
            (
                "gemini-3.5-flash",
                {**BY_NAME["gemini"].params(sim.url), "max_parallel_requests": 1},
            ),
            ("gpt-4o-mini", BY_NAME["openai"].params(sim.url)),
        ],
    )
    tag = uuid.uuid4().hex[:8]
    slow_prompts = [f"Long answer {n} {tag} [[sim tokens=10 tps=25]]" for n in range(3)]
    fast_prompts = [f"Quick answer {n} {tag}" for n in range(2)]
    slow_ids = [await submit(chat(p, "gemini-3.5-flash")) for p in slow_prompts]
    fast_ids = [await submit(chat(p, "gpt-4o-mini")) for p in fast_prompts]
    worker = start_worker(
        "--drain",
        WORKER_MODELS_FILE=models,
        WORKER_CONCURRENCY="4",
        OPENAI_API_KEY=OPENAI_KEY,
        GEMINI_API_KEY=GEMINI_KEY,
    )
    assert await worker.wait(30) == 0, worker.output

    finished = {}
    for job_id, prompt in zip([*slow_ids, *fast_ids], [*slow_prompts, *fast_prompts], strict=True):
        record = await row(db, job_id)
        assert (record["status"], record["attempts"]) == ("completed", 1), record["error_message"]
        assert record["partial_content"] == expected_answer(
            prompt, 10 if "Long" in prompt else DEFAULT_TOKENS
        )
        finished[job_id] = record["completed_at"]
    # The limited provider streamed one answer at a time; its other jobs waited for the slot
    # instead of being refused and retried ...
    assert sim.max_active("gemini") == 1
    assert [len(sim.requests(provider="gemini", prompt=p)) for p in slow_prompts] == [1, 1, 1]
    assert '"provider_retry"' not in worker.output
    assert '"provider_limit_wait"' in worker.output
    # ... while the other provider's jobs went through meanwhile.
    assert max(finished[i] for i in fast_ids) < max(finished[i] for i in slow_ids)


async def test_cost_from_prices_and_model_resolution(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    openai_params = BY_NAME["openai"].params(sim.url)
    house_prices = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    gemini_prices = {"input_cost_per_token": 5e-7, "output_cost_per_token": 4e-6}
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {"model_name": "gpt-4o-mini", "litellm_params": openai_params},
                    {
                        "model_name": "house-model",
                        "litellm_params": {**openai_params, "model": "openai/house-model"},
                        "model_info": house_prices,
                    },
                    {
                        "model_name": "mystery-model",
                        "litellm_params": {**openai_params, "model": "openai/mystery-model"},
                    },
                    {
                        "model_name": "house-gemini",
                        "litellm_params": {
                            **BY_NAME["gemini"].params(sim.url),
                            "model": "gemini/house-gemini",
                        },
                        "model_info": gemini_prices,
                    },
                ]
            }
        ),
        encoding="utf-8",
    )
    tag = uuid.uuid4().hex[:8]
    requests = {
        "table": chat(f"Priced by LiteLLM {tag}", "gpt-4o-mini"),
        "model_info": chat(f"Priced by the file {tag}", "house-model"),
        "gemini_model_info": chat(f"Priced by the file too {tag}", "house-gemini"),
        "unknown_price": chat(f"Nobody knows the price {tag}", "mystery-model"),
        # Allowed below: a LiteLLM string the file does not list, sent with the provider's
        # own environment variables (OPENAI_API_KEY, OPENAI_BASE_URL).
        "unlisted": chat(f"Raw string allowed {tag}", "openai/gpt-4o-mini"),
        "legacy": {
            "provider": "openai",
            "modelId": "house-model",
            "messages": [{"role": "user", "content": f"Old format {tag}"}],
        },
        "no_provider": chat(f"Nowhere {tag}", "nowhere/some-model"),
    }
    ids = {kind: await submit(request) for kind, request in requests.items()}
    worker = start_worker(
        "--drain",
        WORKER_MODELS_FILE=str(models),
        WORKER_ALLOW_UNLISTED_MODELS="true",
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=f"{sim.url}/v1",
        GEMINI_API_KEY=GEMINI_KEY,
    )
    assert await worker.wait(30) == 1, worker.output

    jobs = {kind: await job(db, job_id) for kind, job_id in ids.items()}

    def priced(kind: str, input_cost: float, output_cost: float) -> float:
        usage = jobs[kind].response["usage"]
        return float(usage["prompt_tokens"] * input_cost + usage["completion_tokens"] * output_cost)

    for kind in ("table", "model_info", "gemini_model_info", "unknown_price", "unlisted", "legacy"):
        assert jobs[kind].status == "completed", (kind, jobs[kind].error_message)
        assert jobs[kind].text == expected_answer(requests[kind]["messages"][0]["content"])
    # gpt-4o-mini in LiteLLM's price table: $0.15 / $0.60 per million tokens.
    assert jobs["table"].response["cost_usd"] == pytest.approx(priced("table", 1.5e-7, 6e-7))
    assert jobs["unlisted"].response["cost_usd"] == pytest.approx(priced("unlisted", 1.5e-7, 6e-7))
    assert jobs["model_info"].response["cost_usd"] == pytest.approx(
        priced("model_info", 1e-6, 2e-6)
    )
    assert jobs["legacy"].response["cost_usd"] == pytest.approx(priced("legacy", 1e-6, 2e-6))
    assert jobs["gemini_model_info"].response["cost_usd"] == pytest.approx(
        priced("gemini_model_info", 5e-7, 4e-6)
    )
    assert jobs["unknown_price"].response["cost_usd"] is None
    assert jobs["unknown_price"].response["usage"]["completion_tokens"] == DEFAULT_TOKENS

    (unlisted,) = sim.requests(
        provider="openai", prompt=requests["unlisted"]["messages"][0]["content"]
    )
    assert unlisted.header("authorization") == f"Bearer {OPENAI_KEY}"
    (legacy,) = sim.requests(provider="openai", prompt=requests["legacy"]["messages"][0]["content"])
    assert legacy.body["model"] == "house-model"
    failed = jobs["no_provider"]
    assert (failed.status, failed.error_code) == ("failed", "unknown_model")
    assert "nowhere/some-model" in (failed.error_message or "")


def test_the_example_models_file_is_valid() -> None:
    catalog = ModelCatalog.load(REPO / "config/models.yaml")
    assert {"gpt-4o-mini", "gemini-3.5-flash", "claude-sonnet", "gpt-4o-azure"} <= catalog.names


@pytest.mark.parametrize(
    ("entry", "router_settings", "message"),
    [
        (
            {"model_name": "typo", "litellm_params": {"model": "opnai-gpt-4o-mini"}},
            {},
            "model_list[0] (typo): LiteLLM knows no provider for model 'opnai-gpt-4o-mini'",
        ),
        (
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/x", "rpm": 0},
            },
            {},
            "model_list[0] (m): litellm_params.rpm must be a positive integer",
        ),
        (
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/x"},
                "model_info": {"input_cost_per_token": "cheap"},
            },
            {},
            "model_list[0] (m): model_info.input_cost_per_token must be a number >= 0",
        ),
        (
            {"model_name": "m", "litellm_params": {"model": "openai/x"}},
            {"fallbacks": [{"m": ["nowhere"]}]},
            "router_settings.fallbacks names models not in model_list: ['nowhere']",
        ),
    ],
)
def test_a_wrong_models_file_is_refused_with_a_clear_message(
    tmp_path: Path, entry: dict[str, Any], router_settings: dict[str, Any], message: str
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"model_list": [entry], "router_settings": router_settings}))
    with pytest.raises(ModelsFileError) as refused:
        ModelCatalog.load(path)
    assert message in str(refused.value)


TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "clock", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}}}},
]  # fmt: skip


async def test_rich_answers_on_every_providers_lean_reader(
    tmp_path: Path,
    db: asyncpg.Connection,
    submit: Any,
    start_worker: StartWorker,
    sim: Simulator,
) -> None:
    """Reasoning, tool calls (parallel, interleaved where the format allows), refusals, a
    content filter's stop and cached prompt tokens, from each provider's own wire format
    through its lean reader to the row, byte for byte."""
    entries = [(provider.model_name, provider.params(sim.url)) for provider in PROVIDERS]
    env: dict[str, str] = {}
    for provider in PROVIDERS:
        env |= provider.env(sim.url)
    tag = uuid.uuid4().hex[:8]
    cases: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for provider in PROVIDERS:
        # Gemini shows thoughts when asked for them (LiteLLM maps the effort to thinkingConfig).
        effort = {"reasoning_effort": "low"} if provider.name == "gemini" else {}
        cases |= {
            (provider.name, "reasoning"): (
                "[[sim tokens=4 reasoning=6 reasoning_style=reasoning_content]]", effort),
            (provider.name, "tools"): ("[[sim tools=2 interleave=1]]", {"tools": TOOLS}),
            (provider.name, "filtered"): ("[[sim tokens=8 filter_after=3]]", {}),
            (provider.name, "cached"): ("[[sim tokens=3 cached=40]]", {}),
        }  # fmt: skip
        if provider.name in ("openai", "azure"):
            cases[(provider.name, "refusal")] = ("[[sim tokens=4 refuse=1]]", {})
    prompts = {key: f"Rich {key[0]} {key[1]} {tag} {d}" for key, (d, _) in cases.items()}
    ids = {
        key: await submit(chat(prompts[key], BY_NAME[key[0]].model_name, **options))
        for key, (_, options) in cases.items()
    }
    models = write_models(tmp_path / "models.yaml", entries)
    worker = start_worker("--drain", WORKER_MODELS_FILE=models, **WORKER_ENV, **env)
    assert await worker.wait(45) == 1, worker.output  # the filtered jobs fail
    assert set(model_paths(worker.output).values()) == {"lean"}

    failures: dict[str, str] = {}
    for (name, kind), job_id in ids.items():
        try:
            check_rich(name, kind, prompts[(name, kind)], await row(db, job_id),
                       await job(db, job_id))  # fmt: skip
        except (AssertionError, KeyError, TypeError, ValueError) as error:
            failures[f"{name} {kind}"] = repr(error)[:400]
    assert not failures, json.dumps(failures, indent=2, ensure_ascii=False)
    assert "Traceback" not in worker.output


def check_rich(provider: str, kind: str, prompt: str, record: Any, answered: Job) -> None:
    """One rich job's row against what the simulator sent for it."""
    message = answered.response.get("message") or {}
    conversation = [{"role": "user", "content": prompt}]
    if kind == "filtered":
        assert (answered.status, answered.error_code) == ("failed", "content_filtered")
        assert answered.text == "".join(answer_for(prompt, 8)[:3])
        return
    assert answered.status == "completed", answered.error_message
    if kind == "reasoning":
        assert record["reasoning_content"] == expected_reasoning(conversation, 6)
        assert answered.text == expected_answer(prompt, 4)
        if provider == "bedrock":
            (block,) = message["thinking_blocks"]
            assert block["thinking"] == record["reasoning_content"]
            assert block["signature"] == thought_signature(conversation)
    elif kind == "tools":
        assert answered.response["finish_reason"] == "tool_calls"
        expected = expected_tool_calls(conversation, TOOLS, provider=provider)
        calls = message["tool_calls"]
        named = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]
        assert named == [(e.name, json.loads(e.arguments)) for e in expected]
        if provider != "gemini":  # Gemini sends no ids: the worker names its calls
            assert [c["id"] for c in calls] == [e.id for e in expected]
    elif kind == "cached":
        assert answered.response["usage"]["cached_tokens"] == 40
        assert answered.response["usage"]["prompt_tokens"] == prompt_tokens(prompt) + 40
        assert isinstance(answered.response["cost_usd"], float)
    else:
        assert message["refusal"] == expected_answer(prompt, 4)
        assert answered.text == message["refusal"]
