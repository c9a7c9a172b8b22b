"""Prometheus metrics: every series the worker exports. The only module using prometheus_client.

Labels are bounded: `model` is a models-file name (or "unlisted"), `provider` a LiteLLM
provider, `outcome` a job status, `error_code` a contract code. Never a job or user id.
"""

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

_P = "streaming_worker_"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

BUILD_INFO = Info(_P + "build", "Worker and LiteLLM versions", registry=REGISTRY)

# Jobs
JOBS_FINISHED = Counter(
    _P + "jobs_finished_total",
    "Jobs that reached an outcome (completed, failed, cancelled)",
    ["outcome", "model", "provider", "error_code"],
    registry=REGISTRY,
)
JOBS_RELEASED = Counter(
    _P + "jobs_released_total",
    "Running jobs handed back at shutdown for another worker to restart",
    registry=REGISTRY,
)
JOBS_TAKEN_OVER = Counter(
    _P + "jobs_taken_over_total",
    "Jobs restarted here because their worker died (their lease ran out)",
    registry=REGISTRY,
)
JOBS_PARKED = Gauge(
    _P + "jobs_parked",
    "Jobs waiting for their provider's own limit, their worker slot given back meanwhile",
    registry=REGISTRY,
)
ATTEMPTS_RESTARTED = Counter(
    _P + "attempts_restarted_total",
    "Attempts started over from empty text after a broken stream",
    ["model"],
    registry=REGISTRY,
)
PROVIDER_RETRIES = Counter(
    _P + "provider_retries_total",
    "Provider calls retried before the first token",
    ["model", "error_code"],
    registry=REGISTRY,
)
JOBS_IN_FLIGHT = Gauge(_P + "jobs_in_flight", "Jobs running now", registry=REGISTRY)
CONCURRENCY_LIMIT = Gauge(
    _P + "concurrency_limit", "Jobs this worker runs at most at once", registry=REGISTRY
)
JOB_DURATION = Histogram(
    _P + "job_duration_seconds",
    "Claim to outcome",
    ["outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    _P + "queue_wait_seconds",
    "Message sent (SQS SentTimestamp) to job claimed",
    buckets=_SECONDS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    _P + "time_to_first_token_seconds",
    "Provider call to its first text",
    ["model", "provider"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
STREAM_DURATION = Histogram(
    _P + "provider_stream_duration_seconds",
    "Provider call to the end of its stream",
    ["model", "provider"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
TOKENS = Counter(
    _P + "tokens_total",
    "Tokens of finished jobs, as the provider reported them (else counted)",
    ["model", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    _P + "cost_usd_total",
    "Price of finished jobs in US dollars, where the price is known",
    ["model"],
    registry=REGISTRY,
)

# Messages
POISON_MESSAGES = Counter(
    _P + "poison_messages_total",
    "Messages that can never name a job, removed at once",
    ["reason"],
    registry=REGISTRY,
)
MESSAGES_DEFERRED = Counter(
    _P + "messages_deferred_total",
    "Messages left for redelivery (row not visible yet, or its lease still running)",
    ["reason"],
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    _P + "queue_messages",
    "Messages in the queue (and its dead-letter queue) by state, from GetQueueAttributes",
    ["queue", "state"],
    registry=REGISTRY,
)

# Writes
FLUSH_DURATION = Histogram(
    _P + "db_flush_duration_seconds",
    "One batched write of every running job's new text",
    buckets=_SECONDS,
    registry=REGISTRY,
)
FLUSH_ROWS = Histogram(
    _P + "db_flush_rows",
    "Jobs written per flush",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    registry=REGISTRY,
)
EARLY_FLUSHES = Counter(
    _P + "db_early_flushes_total",
    "Flushes ahead of the beat that carried only jobs' first text (at most ten a second)",
    registry=REGISTRY,
)
VISIBILITY_LAG = Histogram(
    _P + "visibility_lag_seconds",
    "Text arriving at the worker to the commit that makes it readable",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10),
    registry=REGISTRY,
)


def observe_flush(*, seconds: float, rows: int) -> None:
    FLUSH_DURATION.observe(seconds)
    FLUSH_ROWS.observe(rows)


def observe_visibility_lag(seconds: float) -> None:
    VISIBILITY_LAG.observe(seconds)


def job_finished(
    *,
    outcome: str,
    model: str,
    provider: str,
    error_code: str,
    duration_s: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float | None = None,
) -> None:
    JOBS_FINISHED.labels(outcome, model, provider, error_code).inc()
    JOB_DURATION.labels(outcome).observe(duration_s)
    if prompt_tokens:
        TOKENS.labels(model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(model, "completion").inc(completion_tokens)
    if cost_usd:
        COST.labels(model).inc(cost_usd)


def queue_depth(queue: str, counts: dict[str, int]) -> None:
    for state, count in counts.items():
        QUEUE_MESSAGES.labels(queue, state).set(count)


def render() -> bytes:
    return generate_latest(REGISTRY)
