"""The worker phase's figures: throughput, CPU per chunk, memory, pickup and visibility lag,
statements and WAL, from what the harness sampled, read back and scraped."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.parts import Parts, Sample
from bench.processes import Child
from bench.procfs import core_busy_share
from bench.scrape import WorkerMetrics
from bench.sim import answer_tokens, record_tag
from bench.stats import (
    JobRow,
    chunk_lags,
    distribution,
    max_in_flight,
    pickup_latencies,
    ratio,
)
from bench.wal import per_job
from bench.workerlog import WorkerLog
from bench.workload import Run


def worker_figures(
    parts: Parts,
    *,
    job_ids: list[str],
    run: Run,
    ready: Sample,
    logs: list[WorkerLog],
    workers: list[Child],
    rss_before: list[int],
    peak: list[int],
    sent: dict[str, float],
    transactions: int,
    other_transactions: int,
    wal_bytes: int | None,
    wal_profile: dict[str, Any],
    idle_pickups: list[float],
    scraped: WorkerMetrics,
    rows: list[JobRow],
    deltas: dict[str, list[tuple[int, float]]],
    records: list[dict[str, Any]],
    exit_codes: list[int],
    stop_s: float,
) -> dict[str, Any]:
    """The worker phase's figures, as the report shows them under `worker`."""
    cfg, done = parts.cfg, run.done
    # The latest request per job is the attempt whose text the row kept.
    latest: dict[int, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.get("started_at") or 0.0):
        tag = record_tag(record)
        if tag is not None:
            latest[tag[1]] = record
    chunks = sum(int(r.get("chunks_sent", 0)) for r in records)
    lags: list[float] = []
    first_text_lags: list[float] = []  # the provider's send of chunk 0 -> its delta committed
    misfits = wrong_text = 0
    for row in rows:
        request = latest.get(row.index)
        if request is None or request.get("started_at") is None:
            continue
        tokens = answer_tokens([{"role": "user", "content": request["prompt"]}], cfg.tokens)
        expected = hashlib.sha256("".join(tokens).encode()).hexdigest()
        if row.status == "completed" and row.text_sha256 != expected:
            wrong_text += 1
        job_lags, job_misfits = chunk_lags(
            tokens,
            deltas.get(row.job_id, []),
            # An answer that thinks first sends its text think_s later (simulator/stream.py).
            started_at=request["started_at"] + float(request.get("think_s") or 0.0),
            ttft_s=cfg.ttft_s,
            tps=cfg.tps,
        )
        lags += job_lags
        first_text_lags += job_lags[:1]
        misfits += job_misfits
    every, free = pickup_latencies(rows, sent, cfg.capacity)
    statuses = Counter(row.status for row in rows)
    ends = [r.completed_at for r in rows if r.completed_at is not None]
    window_s = max(ends) - run.first_send_at if ends and run.first_send_at else None
    active_s = done.at - ready.at
    text_bytes = sum(r.text_bytes for r in rows if r.status == "completed")
    worker_cpu = sum(done.worker_cpu_s)
    ready_cpu = worker_cpu - sum(ready.worker_cpu_s)
    claim_cpu = (
        worker_cpu - sum(run.first_claim.worker_cpu_s) if run.first_claim is not None else None
    )
    backend_cpu = sum(
        cpu - ready.backend_cpu_s.get(pid, 0.0) for pid, cpu in done.backend_cpu_s.items()
    )

    def per_chunk(cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not chunks else round(cpu_s / chunks * 1e6, 1)

    startups = [
        round(log.started_at - w.spawned_at, 2) if log.started_at else None
        for log, w in zip(logs, workers, strict=True)
    ]
    sim_share = (done.sim_cpu_s - ready.sim_cpu_s) / active_s
    return {
        "finished": run.finished,
        "jobs": cfg.jobs,
        "statuses": dict(statuses),
        "restarted_attempts": sum(max(r.attempts - 1, 0) for r in rows),
        "completed_text_mismatches": wrong_text,
        "window_s": None if window_s is None else round(window_s, 2),
        "jobs_per_s": ratio(statuses["completed"], window_s),
        "ideal_jobs_per_s": round(min(cfg.capacity, cfg.jobs) / cfg.stream_s, 2),
        "job_duration_s": distribution(
            [
                r.completed_at - r.started_at
                for r in rows
                if r.status == "completed" and r.completed_at and r.started_at
            ]
        ),
        "ideal_job_duration_s": round(cfg.stream_s, 2),
        "max_in_flight": max_in_flight(rows),
        "chunks": chunks,
        "chunks_per_s": ratio(chunks, window_s, 0),
        "cpu_us_per_chunk": {
            "whole_process": per_chunk(worker_cpu),
            "ready_to_done": per_chunk(ready_cpu),
            "first_claim_to_last_end": per_chunk(claim_cpu),
        },
        "cpu_s": {
            "whole_process": round(worker_cpu, 2),
            "startup": round(sum(ready.worker_cpu_s), 2),
            "ready_to_done": round(ready_cpu, 2),
        },
        "cpu_share_of_its_core": [
            round((d - r) / active_s, 3)
            for d, r in zip(done.worker_cpu_s, ready.worker_cpu_s, strict=True)
        ],
        "core_busy_share": core_busy_share(ready.cores, done.cores),
        "rss_mib": {
            "before_first_job": [round(kib / 1024, 1) for kib in rss_before],
            "peak": [round(kib / 1024, 1) for kib in peak],
        },
        "rss_kib_per_stream": round(
            sum(p - b for p, b in zip(peak, rss_before, strict=True)) / cfg.capacity, 1
        ),
        "startup_s": startups,
        "first_claim_after_first_send_s": _first_claim_delay(logs, run.first_send_at),
        "pickup_latency_s": distribution(every),
        "pickup_latency_free_slot_s": distribution(free),
        "pickup_latency_idle_s": distribution(idle_pickups),
        "visibility_lag_s": distribution(lags),
        "first_text_lag_s": distribution(first_text_lags),
        # From the workers' own /metrics: how long a flush takes, and the lag they measure
        # (text received -> commit), as bucket bounds.
        "worker_histograms": scraped.histograms,
        # The simulator's own delays count in the lag (it is measured from the due time).
        "simulator_late_chunks_share": ratio(
            sum(int(r.get("late_chunks", 0)) for r in records), chunks, 4
        ),
        "simulator_late_max_s": max((r.get("late_max_s", 0.0) for r in records), default=None),
        "visibility_misfit_deltas": misfits,
        "db": {
            "transactions": transactions,
            "per_s": ratio(transactions, active_s, 1),
            "per_job": ratio(transactions, cfg.jobs, 1),
            # Early flushes carry only jobs' first text, ahead of the beat; without them the
            # worker would run the statements it ran before they existed.
            "early_flushes": scraped.early_flushes,
            "early_flushes_per_s": ratio(scraped.early_flushes, active_s, 1),
            "vs_without_early_flushes": ratio(
                transactions, transactions - scraped.early_flushes, 2
            ),
            "backend_cpu_s": round(backend_cpu, 2),
            "backend_cpu_us_per_chunk": per_chunk(backend_cpu),
            # WAL is cluster-wide: others' writes in the same window would be counted.
            "other_databases_transactions": other_transactions,
        },
        "wal": {
            "bytes": wal_bytes,
            "per_job": ratio(wal_bytes, cfg.jobs, 0),
            "text_bytes_per_job": ratio(text_bytes, statuses["completed"], 0),
            "wal_per_text_byte": ratio(wal_bytes, text_bytes),
            "full_page_images": done.wal_fpi - ready.wal_fpi,
            "checkpoints_during_run": done.checkpoints - ready.checkpoints,
            "by_record": per_job(wal_profile, cfg.jobs),
        },
        "simulator_cpu_share": round(sim_share, 3),
        "moto_cpu_share": round((done.moto_cpu_s - ready.moto_cpu_s) / active_s, 3),
        "harness_cpu_share": round((done.harness_cpu_s - ready.harness_cpu_s) / active_s, 3),
        "log_warnings": dict(sum((log.problems for log in logs), Counter())),
        "exit_codes": exit_codes,
        "shutdown_s": round(stop_s, 2),
        "unsent_jobs": len(job_ids) - len(sent),
    }


def _first_claim_delay(logs: Sequence[WorkerLog], first_send_at: float | None) -> float | None:
    claims = [log.first_claim_at for log in logs if log.first_claim_at is not None]
    if not claims or first_send_at is None:
        return None
    return round(min(claims) - first_send_at, 3)
