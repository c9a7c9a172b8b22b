"""Statistics over the run's rows and deltas: distributions, pickup, in flight, chunk lag."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def distribution(values: Sequence[float], *, digits: int = 4) -> dict[str, float | int | None]:
    """n, p50, p99, max and mean (nearest-rank percentiles)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], digits)

    return {
        "n": len(ordered),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "max": round(ordered[-1], digits),
        "mean": round(sum(ordered) / len(ordered), digits),
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


@dataclass(frozen=True)
class JobRow:
    index: int
    job_id: str
    status: str
    attempts: int
    started_at: float | None
    completed_at: float | None
    text_bytes: int
    text_sha256: str


def pickup_latencies(
    rows: Sequence[JobRow], sent: dict[str, float], capacity: int
) -> tuple[list[float], list[float]]:
    """(every job, jobs that had a free slot waiting when sent): row claimed - message sent.

    A job had a free slot when the jobs sent up to it and not yet ended, itself included,
    fit in the workers' capacity: then its wait is the receive path, not other jobs.
    """
    sends = sorted(sent.values())
    ends = sorted(r.completed_at for r in rows if r.completed_at is not None)
    every, free = [], []
    for row in rows:
        at = sent.get(row.job_id)
        if at is None or row.started_at is None:
            continue
        wait = row.started_at - at
        every.append(wait)
        outstanding = bisect.bisect_right(sends, at) - bisect.bisect_right(ends, at)
        if outstanding <= capacity:
            free.append(wait)
    return every, free


def max_in_flight(rows: Sequence[JobRow]) -> int:
    """The most jobs claimed and not yet ended at any one time, from the rows' timestamps."""
    events = sorted(
        [(r.started_at, 1) for r in rows if r.started_at is not None]
        + [(r.completed_at, -1) for r in rows if r.completed_at is not None]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def chunk_lags(
    tokens: Sequence[str],
    deltas: Sequence[tuple[int, float]],
    *,
    started_at: float,
    ttft_s: float,
    tps: float,
) -> tuple[list[float], int]:
    """Per chunk: delta row's created_at - when the simulator sent the chunk; and misfits.

    The simulator is deterministic: content chunk k (from 0) leaves at
    started_at + ttft + k / tps. A delta's cumulative length tells how many chunks it covers.
    """
    cumulative = list(itertools.accumulate((len(t) for t in tokens), initial=0))
    lags: list[float] = []
    chars = covered = misfits = 0
    for length, created_at in deltas:
        chars += length
        count = bisect.bisect_left(cumulative, chars)
        if count >= len(cumulative) or cumulative[count] != chars:
            misfits += 1  # not on a chunk boundary: the next delta that is accounts for it
            continue
        lags += [created_at - (started_at + ttft_s + k / tps) for k in range(covered, count)]
        covered = count
    return lags, misfits
