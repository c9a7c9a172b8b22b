"""Prometheus metrics: every series the worker exports. The only module using prometheus_client."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_PREFIX = "streaming_worker_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

BUILD_INFO = Info(_PREFIX + "build", "Worker build", registry=REGISTRY)
JOBS_FINISHED = Counter(
    _PREFIX + "jobs_finished_total",
    "Jobs that reached an outcome",
    ["outcome", "model", "provider", "error_code"],
    registry=REGISTRY,
)
POISON_MESSAGES = Counter(
    _PREFIX + "poison_messages_total",
    "Queue messages that can never name a job, removed at once",
    ["reason"],
    registry=REGISTRY,
)
MESSAGES_DEFERRED = Counter(
    _PREFIX + "messages_deferred_total",
    "Messages left for redelivery (row not visible yet, or job leased elsewhere)",
    ["reason"],
    registry=REGISTRY,
)
PROVIDER_RETRIES = Counter(
    _PREFIX + "provider_retries_total",
    "Provider calls retried before the first token",
    ["error_code"],
    registry=REGISTRY,
)
JOBS_IN_FLIGHT = Gauge(_PREFIX + "jobs_in_flight", "Jobs running now", registry=REGISTRY)
CONCURRENCY_LIMIT = Gauge(
    _PREFIX + "concurrency_limit", "WORKER_CONCURRENCY of this worker", registry=REGISTRY
)
JOB_DURATION = Histogram(
    _PREFIX + "job_duration_seconds",
    "Claim to outcome",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    _PREFIX + "time_to_first_token_seconds",
    "Provider call to first text",
    ["model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
FLUSH_DURATION = Histogram(
    _PREFIX + "db_flush_duration_seconds",
    "One batched write of every running job's new text",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
FLUSH_ROWS = Histogram(
    _PREFIX + "db_flush_rows",
    "Jobs written per flush",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    registry=REGISTRY,
)
VISIBILITY_LAG = Histogram(
    _PREFIX + "visibility_lag_seconds",
    "Text arriving at the worker to the commit that makes it readable",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10),
    registry=REGISTRY,
)


def observe_flush(*, seconds: float, rows: int) -> None:
    FLUSH_DURATION.observe(seconds)
    FLUSH_ROWS.observe(rows)


def observe_visibility_lag(seconds: float) -> None:
    VISIBILITY_LAG.observe(seconds)


def render() -> bytes:
    return generate_latest(REGISTRY)
