"""The app's view of rich answers through the CLI, against a worker and the simulator:
`--follow` shows reasoning apart from the answer, `--tools` sends tool definitions, and
`status` shows the finish reason, the tool calls, the reasoning and the usage details."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)

from simulator import answer_text, expected_reasoning, expected_tool_calls
from tests.client.conftest import CLI_TIMEOUT_S, Cli, needs_rich_worker
from tests.conftest import row, sim_requests
from tests.support import REPO, worker_command

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def tools_file(tmp_path: Path, tools: object) -> str:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools), encoding="utf-8")
    return str(path)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@needs_rich_worker
async def test_follow_shows_reasoning_on_stderr_and_only_the_answer_on_stdout(
    cli: Cli, db: asyncpg.Connection
) -> None:
    prompt = f"ponder {uuid.uuid4()} [[sim reasoning=12 think_s=0.3 tokens=10 tps=40]]"
    result = await cli("submit", "--model", "sim-model", "--follow", prompt)

    assert result.returncode == 0, result.stderr
    job_id = uuid.UUID(result.stderr.split()[1])
    record = await row(db, job_id)
    answer, reasoning = answer_text(user(prompt), 10), expected_reasoning(user(prompt), 12)
    # stdout is the answer, byte for byte, and nothing else: `> answer.txt` keeps just it.
    assert result.stdout.encode() == answer.encode() == record["partial_content"].encode()
    assert record["reasoning_content"] == reasoning
    assert f"\nthinking: {reasoning}\n" in result.stderr


@needs_rich_worker
async def test_follow_prints_the_reasoning_before_the_answer(served_env: dict[str, str]) -> None:
    """stderr and stdout on one pipe, as on a terminal: the marked reasoning comes first."""
    prompt = f"first think {uuid.uuid4()} [[sim reasoning=8 think_s=0.3 tokens=6 tps=30]]"
    process = await asyncio.create_subprocess_exec(
        *worker_command("submit", "--model", "sim-model", "--follow", prompt),
        env={**os.environ, **served_env},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)

    assert process.returncode == 0, output.decode()
    reasoning, answer = expected_reasoning(user(prompt), 8), answer_text(user(prompt), 6)
    assert f"\nthinking: {reasoning}\n{answer}streaming-worker: completed" in output.decode()


@needs_rich_worker
async def test_follow_starts_the_reasoning_over_with_the_attempt(
    cli: Cli, db: asyncpg.Connection
) -> None:
    """A stream cut after its reasoning and some text restarts the attempt: both start over."""
    prompt = f"rethink {uuid.uuid4()} [[sim reasoning=6 drop_after=8 times=1 tokens=10 tps=20]]"
    result = await cli("submit", "--model", "sim-model", "--follow", prompt)

    assert result.returncode == 0, result.stderr
    record = await row(db, uuid.UUID(result.stderr.split()[1]))
    assert (record["status"], record["attempts"]) == ("completed", 2)
    reasoning = expected_reasoning(user(prompt), 6)
    assert record["reasoning_content"] == reasoning
    restarted = result.stderr.split("the answer started over (attempt 2)\n", 1)[1]
    assert restarted.startswith(f"thinking: {reasoning}\n")
    assert result.stdout.rsplit("\n", 1)[-1] == record["partial_content"]


async def test_submit_tools_sends_the_definitions_and_the_options(
    cli: Cli, db: asyncpg.Connection, queue_url: str, tmp_path: Path, simulator_url: str
) -> None:
    """`--tools`, `--tool-choice` and `--reasoning-effort` land in `options`; the worker
    hands the tools and the choice to the provider as given."""
    prompt = f"weather {uuid.uuid4()}"
    queued = await cli(
        "submit",
        "--model",
        "sim-model",
        "--tools",
        tools_file(tmp_path, [WEATHER]),
        "--tool-choice",
        "get_weather",
        "--reasoning-effort",
        "low",
        prompt,
        SQS_QUEUE_URL=queue_url,  # nobody reads this one
    )
    assert queued.returncode == 0, queued.stderr
    forced = {"type": "function", "function": {"name": "get_weather"}}
    request_data = json.loads((await row(db, uuid.UUID(queued.stdout.strip())))["request_data"])
    assert request_data["options"] == {
        "tools": [WEATHER],
        "tool_choice": forced,
        "reasoning_effort": "low",
    }

    served = await cli(
        "submit",
        "--model",
        "sim-model",
        "--tools",
        tools_file(tmp_path, [WEATHER]),
        "--tool-choice",
        "required",
        "--follow",
        prompt,
    )
    assert served.returncode == 0, served.stderr
    [sent] = [r["body"] for r in sim_requests(simulator_url) if r["prompt"] == prompt]
    assert (sent["tools"], sent["tool_choice"]) == ([WEATHER], "required")


@needs_rich_worker
async def test_a_job_given_tools_ends_with_the_calls_follow_prints(
    cli: Cli, db: asyncpg.Connection, tmp_path: Path
) -> None:
    prompt = f"call {uuid.uuid4()} [[sim tools=2]]"
    result = await cli(
        "submit",
        "--model",
        "sim-model",
        "--tools",
        tools_file(tmp_path, WEATHER),  # one tool, not in a list: taken as a list of one
        "--follow",
        prompt,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # no text before the calls
    calls = expected_tool_calls(user(prompt), [WEATHER])
    response = json.loads((await row(db, uuid.UUID(result.stderr.split()[1])))["response_data"])
    assert response["finish_reason"] == "tool_calls"
    assert response["message"]["tool_calls"] == [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
    for call in calls:
        assert f"streaming-worker: tool call {call.name} {call.arguments} ({call.id})\n" in (
            result.stderr
        )
    assert "streaming-worker: completed, finish tool_calls, attempts 1" in result.stderr


@needs_rich_worker
async def test_status_shows_finish_reason_tool_calls_reasoning_and_usage_details(
    cli: Cli, tmp_path: Path
) -> None:
    prompt = f"status {uuid.uuid4()} [[sim reasoning=6 tools=1 cached=4]]"
    done = await cli(
        "submit", "--model", "sim-model", "--tools", tools_file(tmp_path, [WEATHER]), "--follow",
        prompt,
    )  # fmt: skip
    job_id = done.stderr.split()[1]
    [call] = expected_tool_calls(user(prompt), [WEATHER])
    reasoning = expected_reasoning(user(prompt), 6)

    shown = await cli("status", job_id)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split("  ", 1) for line in shown.stdout.splitlines())
    fields = {name.strip(): value.strip() for name, value in lines.items()}
    assert fields["finish"] == "tool_calls"
    assert fields["tool calls"] == "1"
    assert fields["tool call 1"] == f"{call.name} {call.arguments} ({call.id})"
    assert fields["reasoning"] == f"{len(reasoning)} characters"
    assert "(4 cached) + " in fields["usage"]
    assert "completion (6 reasoning) =" in fields["usage"]

    as_json = json.loads((await cli("status", "--json", job_id)).stdout)
    assert as_json["reasoning_content"] == reasoning
    assert as_json["reasoning_chars"] == len(reasoning)
    response = as_json["response_data"]
    assert response["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in response["message"]["tool_calls"]] == [call.name]
    assert (response["usage"]["reasoning_tokens"], response["usage"]["cached_tokens"]) == (6, 4)


async def test_a_tools_file_that_cannot_be_sent_is_exit_2_with_the_reason(
    cli: Cli, tmp_path: Path, queue_url: str
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"type": "function",', encoding="utf-8")
    cases = {
        str(bad_json): "not JSON",
        str(tmp_path / "missing.json"): "cannot read it",
        tools_file(tmp_path, []): "the list is empty",
        tools_file(tmp_path, [{"type": "function", "function": {}}]): "function.name",
        tools_file(tmp_path, ["get_weather"]): "expected an object",
    }
    for path, reason in cases.items():
        result = await cli(
            "submit", "--model", "sim-model", "--tools", path, "hi", SQS_QUEUE_URL=queue_url
        )
        assert result.returncode == 2, (path, result.stderr)
        assert result.stderr.startswith(f"streaming-worker submit: --tools {path}: "), reason
        assert reason in result.stderr
        assert result.stdout == ""


async def test_a_bare_function_in_the_tools_file_is_sent_as_an_openai_tool(
    cli: Cli, db: asyncpg.Connection, tmp_path: Path, queue_url: str
) -> None:
    bare = WEATHER["function"]
    result = await cli(
        "submit",
        "--model",
        "sim-model",
        "--tools",
        tools_file(tmp_path, bare),
        "hi",
        SQS_QUEUE_URL=queue_url,
    )

    assert result.returncode == 0, result.stderr
    request_data = json.loads((await row(db, uuid.UUID(result.stdout.strip())))["request_data"])
    assert request_data["options"]["tools"] == [WEATHER]
