"""The report: one JSON document with the run's figures, what makes any of them suspect, and
notes on how each is measured; written to `bench-results/<timestamp>-<label>.json`."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.config import RESULTS_DIR, Config
from bench.processes import Placement
from bench.stats import ratio

SIM_CPU_WARN = 0.8
FOREIGN_LOAD_WARN = 0.15
SATURATED = 0.9
STRETCHED = 1.15  # job duration over the simulator's pace
FLOOR_DRIFT_WARN = 1.15  # the floor after the worker phase over the floor before it
OTHER_DB_WARN = 100

NOTES = [
    "chunks are content chunks (one answer token each); role, finish and usage events are "
    "not counted, for the worker and the baselines alike",
    "worker CPU is utime+stime from /proc/<pid>/stat: whole_process includes startup (the "
    "LiteLLM import); ready_to_done runs from worker_started to the last job's end; "
    "first_claim_to_last_end as sampled by the harness every 0.1 s",
    "pickup latency: the row's started_at minus when the harness's SendMessage returned; "
    "free_slot counts only jobs that, when sent, fit in the workers' free slots (the rest "
    "also waited for other jobs to finish); idle: one-token probe jobs sent one at a time "
    "before the run, each 0.2 s after the last one ended",
    "visibility lag: per chunk, its delta row's created_at (now() of the flush's "
    "transaction, a few ms before commit) minus when the simulator sent the chunk "
    "(request start + ttft + k / tps); simulator_late_chunks_share is the share of chunks "
    "the simulator itself sent over 50 ms after that time (its core was busy)",
    "first text lag: per job, the visibility lag of its first chunk (the provider's send "
    "of the first text -> the delta carrying it committed), beside the lag of every chunk",
    "provider: the wire format the simulator speaks, to the worker's reader and to both "
    "baselines (LiteLLM with the worker's model string; the floor a bare aiohttp reader of "
    "that format); routing: the model is two deployments and a fallback",
    "db transactions: pg_stat_database xact_commit + xact_rollback of the bench database "
    "from the worker being ready until it exited (each autocommit statement is one "
    "transaction; asyncpg's first use of a statement adds a prepare); the harness's own "
    "queries go to another database",
    "WAL: pg_current_wal_lsn() difference, cluster-wide (other databases' writes count too); "
    "a checkpoint during the run adds a full-page image for every page touched after it",
    "baselines: each in its own process on the worker's core, after the worker phase, "
    "same simulator, streams, tokens and pace, uvloop; CPU from process_time() around the "
    "streams (imports excluded); LiteLLM out of the box (its aiohttp transport caps 500 "
    "connections per host)",
    "worker_vs_floor: to the mean of the floor run before the worker phase "
    "(floor_before_worker) and after it; floor_after_vs_before shows how far this machine's "
    "speed drifted meanwhile",
    "PostgreSQL runs unpinned: its backends may use the worker's core (see core_busy_share)",
]


def report(
    cfg: Config,
    *,
    placement: Placement,
    worker: dict[str, Any],
    baselines: dict[str, Any],
    import_litellm_s: float,
    server_version: str,
    duration_s: float,
    load_before: list[float],
) -> dict[str, Any]:
    warnings = _warnings(cfg, placement=placement, worker=worker, baselines=baselines)
    worker_us = worker["cpu_us_per_chunk"]["ready_to_done"]
    ratios: dict[str, float | None] = {
        f"worker_vs_{kind}": ratio(worker_us, result.get("cpu_us_per_chunk"))
        for kind, result in baselines.items()
        if kind != "floor_before_worker"
    }
    floors = _floors(baselines)
    if floors is not None:
        ratios["worker_vs_floor"] = ratio(worker_us, sum(floors) / 2)
        ratios["floor_after_vs_before"] = ratio(floors[1], floors[0])
    return {
        "label": cfg.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_before": load_before,
            "postgres": server_version,
        },
        "config": {
            **asdict(cfg),
            "database_url": _without_password(cfg.database_url),
            "max_waiting": cfg.waiting_limit,
            "timeout_s": cfg.deadline_s,
        },
        "placement": placement.as_json(),
        "worker": worker,
        "baselines": baselines,
        "ratios_cpu_us_per_chunk": ratios,
        # The worker's start is mostly this import, measured alone on the worker's core.
        "import_litellm_s": import_litellm_s,
        "warnings": warnings,
        "notes": NOTES,
    }


def _warnings(
    cfg: Config, *, placement: Placement, worker: dict[str, Any], baselines: dict[str, Any]
) -> list[str]:
    """What makes a figure suspect, and which part was the bottleneck."""
    single = cfg.workers == 1
    sim, moto = worker["simulator_cpu_share"], worker["moto_cpu_share"]
    core = f"cpu{min(placement.workers[0] or {0})}"
    busy = worker["core_busy_share"].get(core, 0.0)
    foreign = busy - worker["cpu_share_of_its_core"][0]
    stretch = (worker["job_duration_s"]["p50"] or 0.0) / cfg.stream_s
    checks = [
        (not worker["finished"], f"not every job ended within the {cfg.deadline_s:g} s deadline"),
        (
            worker["statuses"].get("completed", 0) != cfg.jobs,
            f"not every job completed: {worker['statuses']}",
        ),
        (
            worker["completed_text_mismatches"] > 0,
            "completed jobs whose text differs from the simulator's answer",
        ),
        (sim > SIM_CPU_WARN, "the simulator used over 80% of its core: it may be the bottleneck"),
        (single and sim + moto > SATURATED, "simulator + moto used over 90% of their shared core"),
        (
            any(share > SATURATED for share in worker["cpu_share_of_its_core"]),
            "a worker used over 90% of its core: the worker is the bottleneck",
        ),
        (not single, "two workers: the simulator and moto share the cores with them"),
        (
            single and foreign > FOREIGN_LOAD_WARN,
            f"other processes (PostgreSQL, anything else running) kept {core} busy "
            f"{foreign:.0%} of the time beside the worker: CPU figures may be skewed",
        ),
        (
            single and busy > SATURATED,
            f"{core}, the worker's core, was saturated: the worker could not keep up "
            "(throughput, pickup and visibility figures show a CPU-bound worker)",
        ),
        (
            stretch > STRETCHED,
            f"the median job took {stretch:.2f}x the simulator's pace: the worker could not "
            "keep up (CPU-bound), so pickup and visibility figures include its backlog",
        ),
        (
            worker["db"]["other_databases_transactions"] > OTHER_DB_WARN,
            f"other databases ran {worker['db']['other_databases_transactions']} transactions "
            "during the run: the cluster-wide WAL figure includes their writes",
        ),
    ]
    warnings = [message for failed, message in checks if failed]
    floors = _floors(baselines)
    if floors is not None and not 1 / FLOOR_DRIFT_WARN <= floors[1] / floors[0] <= FLOOR_DRIFT_WARN:
        warnings.append(
            f"the floor took {floors[0]:g} µs per chunk before the worker phase and "
            f"{floors[1]:g} after: the machine's speed drifted, ratios are suspect"
        )
    for kind, result in baselines.items():
        if "error" in result or not result.get("complete", False):
            warnings.append(f"baseline {kind} did not finish: {result.get('error', 'deadline')}")
        elif result.get("simulator_cpu_share", 0) > SIM_CPU_WARN:
            warnings.append(f"the simulator used over 80% of its core during baseline {kind}")
        elif result.get("cpu_share_of_its_core", 0) > SATURATED:
            warnings.append(
                f"baseline {kind} saturated its core (reads then batch several events, which "
                "lowers the cost per chunk a little)"
            )
    return warnings


def _floors(baselines: dict[str, Any]) -> tuple[float, float] | None:
    """The floor's µs per chunk before and after the worker phase, where both finished."""
    before = baselines.get("floor_before_worker", {}).get("cpu_us_per_chunk")
    after = baselines.get("floor", {}).get("cpu_us_per_chunk")
    return None if before is None or after is None else (before, after)


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def write_results(report: dict[str, Any], *, label: str) -> Path:
    """Write the report under `bench-results/` and return its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}-{label}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
