"""The workers' own flush and lag histograms and counters, read from their `/metrics` pages."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.config import HOST

_HISTOGRAMS = {
    "flush_s": "streaming_worker_db_flush_duration_seconds",
    "flush_jobs": "streaming_worker_db_flush_rows",
    "visibility_lag_s": "streaming_worker_visibility_lag_seconds",
}
_EARLY_FLUSHES = "streaming_worker_db_early_flushes_total"


@dataclass(frozen=True)
class WorkerMetrics:
    histograms: dict[str, Any]
    early_flushes: int


async def worker_metrics(ports: Sequence[int]) -> WorkerMetrics:
    """p50/p99 (bucket upper bounds) and mean of the workers' flush and lag histograms, and
    their early flushes, summed over the workers."""
    text = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for port in ports:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"http://{HOST}:{port}/metrics") as resp:
                    text += await resp.text()
    # Summed over the workers: cumulative bucket counts by upper bound, and sum and count.
    sums: dict[tuple[str, float | None], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            le = sample.labels.get("le")
            key = (sample.name, None if le is None else float(le))
            sums[key] = sums.get(key, 0.0) + sample.value
    figures: dict[str, Any] = {}
    for label, name in _HISTOGRAMS.items():
        count = sums.get((f"{name}_count", None), 0.0)
        if not count:
            continue
        buckets = sorted(
            (le, n)
            for (metric, le), n in sums.items()
            if metric == f"{name}_bucket" and le is not None
        )
        figures[label] = {
            "n": int(count),
            "mean": round(sums[(f"{name}_sum", None)] / count, 4),
            **{f"p{q}": next(le for le, n in buckets if n >= count * q / 100) for q in (50, 99)},
        }
    return WorkerMetrics(histograms=figures, early_flushes=int(sums.get((_EARLY_FLUSHES, None), 0)))
