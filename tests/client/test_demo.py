"""`streaming-worker demo`, run as a user runs it: a process, its output and its exit code."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import needs_rich_worker
from tests.support import Process, eventually, spawn, worker_command

DEMO_TIMEOUT_S = 90.0
NO_PGSERVER = importlib.util.find_spec("pgserver") is None


@pytest.fixture(scope="module")
def demos(logs_dir: Path, database_url: str) -> Iterator[dict[str, Process]]:
    """The demo runs of this module, started together: each spends most of its time waiting."""

    def start(name: str, *args: str, database: str = "") -> Process:
        # DATABASE_URL empty, as for `make demo`, unless the run needs its own database.
        return spawn(
            worker_command("demo", *args),
            env={"DATABASE_URL": database},
            log_path=logs_dir / f"demo-{name}.log",
        )

    runs = {"short": start("short", "--short")}
    if not NO_PGSERVER:
        runs["embedded"] = start("embedded", "--short", "--embedded-postgres")
    # Long jobs, to be interrupted; in a throwaway database so its handed-back rows do not
    # linger in the demo's own.
    runs["interrupted"] = start(
        "interrupted",
        "--jobs",
        "2",
        "--tokens",
        "400",
        "--tokens-per-s",
        "20",
        database=database_url,
    )
    yield runs
    for process in runs.values():
        process.stop()


async def test_short_demo_completes_every_job_and_its_answers_are_byte_exact(
    demos: dict[str, Process],
) -> None:
    demo = demos["short"]
    assert await demo.wait(DEMO_TIMEOUT_S) == 0, demo.output
    assert "5/5 completed" in demo.output
    answers = [line.split() for line in demo.output.splitlines() if "  answer   " in line]
    assert len(answers) == 3
    assert all(fields[2:4] == ["completed", "yes"] for fields in answers), demo.output
    assert "Traceback" not in demo.output


@needs_rich_worker
async def test_short_demo_checks_its_thinking_job_and_its_tool_calling_job(
    demos: dict[str, Process],
) -> None:
    """The thinking job's reasoning and answer, and the tool job's finish reason and calls,
    are what the simulator sent."""
    demo = demos["short"]
    assert await demo.wait(DEMO_TIMEOUT_S) == 0, demo.output
    assert re.search(
        r"reasoning \(\d+ characters\) and answer as the simulator sent: yes", demo.output
    )
    assert (
        "finish_reason tool_calls, get_weather called with the simulator's arguments and id: yes"
        in demo.output
    )
    assert "5/5 completed, 5 as expected" in demo.output


@pytest.mark.skipif(
    NO_PGSERVER, reason="the embedded PostgreSQL is the `demo` extra: pip install -e '.[demo]'"
)
async def test_embedded_postgres_runs_the_demo_and_is_removed_after(
    demos: dict[str, Process],
) -> None:
    demo = demos["embedded"]
    assert await demo.wait(DEMO_TIMEOUT_S) == 0, demo.output
    assert "5/5 completed" in demo.output
    [where] = [line for line in demo.output.splitlines() if line.startswith("PostgreSQL: ")]
    assert where.startswith("PostgreSQL: embedded (pgserver) in ")
    data_dir = Path(where.removeprefix("PostgreSQL: embedded (pgserver) in ").split(",")[0])
    assert data_dir.is_relative_to(tempfile.gettempdir())
    assert not await asyncio.to_thread(data_dir.exists)


async def test_ctrl_c_stops_the_demo_gracefully_with_a_summary(
    demos: dict[str, Process],
) -> None:
    """SIGINT is the worker's graceful stop: jobs are handed back and the summary still shows."""
    demo = demos["interrupted"]

    async def streaming() -> bool:
        assert demo.popen.poll() is None, demo.output
        return "first tokens" in demo.output

    await eventually(streaming, timeout_s=DEMO_TIMEOUT_S, what="the demo's first tokens")
    demo.popen.send_signal(signal.SIGINT)

    assert await demo.wait(20) == 1, demo.output
    # The tool-calling job is done in an instant; the long answers and the thinking job not.
    assert "1/4 completed" in demo.output
    assert "stopped early: 3 jobs did not finish and were handed back" in demo.output
    assert "Traceback" not in demo.output
