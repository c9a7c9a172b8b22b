"""README's tool round trip, run as written: its JSON blocks are submitted through a worker
process against the simulator, and the rows must end as the README shows them."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)

from tests.client.conftest import Cli, needs_rich_worker
from tests.conftest import StartWorker, row, sim_requests
from tests.support import REPO, eventually

README = REPO / "README.md"
_BLOCK = re.compile(r"<!-- round-trip: (?P<name>[\w-]+) -->\n```json\n(?P<body>.*?)\n```", re.S)
JOB_2_FORMS = ("job-2-openai", "job-2-ui", "job-2-model")
Submit = Callable[..., Any]


def readme_blocks() -> dict[str, Any]:
    """The round trip's JSON blocks, by the name in the comment before each."""
    text = README.read_text(encoding="utf-8")
    return {match["name"]: json.loads(match["body"]) for match in _BLOCK.finditer(text)}


async def ended(db: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    async def terminal() -> asyncpg.Record | None:
        record = await row(db, job_id)
        return record if record["status"] in ("completed", "failed", "cancelled") else None

    record = await eventually(terminal, what=f"job {job_id} ending")
    return {**record, "response_data": json.loads(record["response_data"])}


def assert_as_shown(shown: dict[str, Any], record: dict[str, Any]) -> None:
    """Every field the README shows is the row's; `response_data` key by key (the README
    leaves out timings and cost)."""
    assert {key: record[key] for key in shown if key != "response_data"} == {
        key: value for key, value in shown.items() if key != "response_data"
    }
    response = record["response_data"]
    assert {key: response.get(key) for key in shown["response_data"]} == shown["response_data"]


def test_the_readme_shows_every_step_of_the_round_trip() -> None:
    blocks = readme_blocks()
    assert set(blocks) == {"job-1", "job-1-row", *JOB_2_FORMS, "job-2-row"}
    tools = blocks["job-1"]["options"]["tools"]
    assert all(blocks[form]["options"]["tools"] == tools for form in JOB_2_FORMS)
    # Job 2 carries job 1's answer as the row gave it, and answers its one tool call.
    message = blocks["job-1-row"]["response_data"]["message"]
    openai = blocks["job-2-openai"]["messages"]
    assert openai[1] == message
    assert openai[2]["tool_call_id"] == message["tool_calls"][0]["id"]
    [ui_call] = blocks["job-2-ui"]["messages"][1]["parts"]
    [shown_part] = blocks["job-1-row"]["response_data"]["parts"]
    assert {**shown_part, "state": "output-available", "output": ui_call["output"]} == ui_call
    assert json.loads(openai[2]["content"]) == ui_call["output"]


@needs_rich_worker
async def test_job_1_ends_with_the_tool_call_the_readme_shows(
    start_worker: StartWorker, submit: Submit, db: asyncpg.Connection, cli: Cli, tmp_path: Path
) -> None:
    blocks = readme_blocks()
    start_worker()

    record = await ended(db, await submit(blocks["job-1"]))

    assert_as_shown(blocks["job-1-row"], record)
    # The README's shell line: no answer on stdout, the call on stderr.
    tools = tmp_path / "weather-tools.json"
    tools.write_text(json.dumps(blocks["job-1"]["options"]["tools"]), encoding="utf-8")
    prompt = blocks["job-1"]["messages"][0]["content"]
    result = await cli("submit", "--model", "sim-model", "--tools", str(tools), "--follow", prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    [call] = blocks["job-1-row"]["response_data"]["message"]["tool_calls"]
    line = (
        f"streaming-worker: tool call {call['function']['name']} {call['function']['arguments']}"
        f" ({call['id']})"
    )
    assert line in result.stderr.splitlines()
    assert f"`{line}`" in README.read_text(encoding="utf-8")


async def test_job_2_in_each_form_ends_with_the_answer_the_readme_shows(
    start_worker: StartWorker, submit: Submit, db: asyncpg.Connection, simulator_url: str
) -> None:
    blocks = readme_blocks()
    start_worker()

    job_ids = {form: await submit(blocks[form]) for form in JOB_2_FORMS}

    for form, job_id in job_ids.items():
        record = await ended(db, job_id)
        assert record["status"] == "completed", (form, record["error_message"])
        assert_as_shown(blocks["job-2-row"], record)
    # Each form reached the provider with the same tool message, the OpenAI form's.
    tool_message = blocks["job-2-openai"]["messages"][2]
    sent = [
        request["body"]["messages"][-1]
        for request in sim_requests(simulator_url)
        if request["body"]["messages"][-1].get("tool_call_id") == tool_message["tool_call_id"]
    ]
    assert len(sent) >= len(JOB_2_FORMS)
    assert all(message == tool_message for message in sent)
