"""The LLM simulator as the benchmark uses it: its command line, its URL, its request records
and its deterministic answers. The one module of the benchmark that names the simulator."""

from __future__ import annotations

import re
import sys
from typing import Any

import aiohttp

from bench.config import HOST, Config
from bench.processes import Child, wait_for
from simulator import answer_tokens

__all__ = ["answer_tokens", "record_tag", "simulator_command", "simulator_records", "simulator_url"]

_TAG = re.compile(r"^bench (\S+) (\d+):")
_LISTENING = re.compile(rb"simulator listening on (http://\S+)")


def simulator_command(*, processes: int) -> list[str]:
    """The simulator as a process of this interpreter, on a free port of `HOST`."""
    return [
        *(sys.executable, "-m", "simulator", "--host", HOST, "--port", "0"),
        *("--processes", str(processes)),
    ]


async def simulator_url(sim: Child) -> str:
    """The URL the simulator printed once listening (it picks a free port)."""
    found: list[str] = []

    async def listening() -> bool:
        match = _LISTENING.search(sim.log_path.read_bytes())
        if match:
            found.append(match.group(1).decode())
        return bool(match)

    await wait_for(listening, what="simulator", child=sim, timeout_s=30)
    return found[0]


async def simulator_records(sim_url: str, cfg: Config, *, phase: str) -> list[dict[str, Any]]:
    """The simulator's request records of one phase, from every one of its processes.

    Each process keeps its own log and answers on the shared port: ask on fresh connections
    until every job has shown up (bounded).
    """
    found: dict[tuple[str, float | None], dict[str, Any]] = {}
    indexes: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=60)
    for _ in range(20 * cfg.sim_processes):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(f"{sim_url}/_sim/requests") as resp,
        ):
            records: list[dict[str, Any]] = await resp.json()
        for record in records:
            tag = record_tag(record)
            if tag is not None and tag[0] == phase:
                found[(record["fingerprint"], record.get("started_at"))] = record
                indexes.add(tag[1])
        if cfg.sim_processes == 1 or len(indexes) >= cfg.jobs:
            break
    return list(found.values())


def record_tag(record: dict[str, Any]) -> tuple[str, int] | None:
    """(phase, index) of a benchmark request, from its prompt in any provider's format."""
    prompt = record.get("prompt")
    match = _TAG.match(prompt) if isinstance(prompt, str) else None
    return (match.group(1), int(match.group(2))) if match else None
