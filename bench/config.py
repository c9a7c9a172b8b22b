"""The benchmark's parameters: presets, the run's shared constants, the jobs' prompts."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout whose worker is measured
RESULTS_DIR = Path("bench-results")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"
REGION = "us-east-1"
MODEL = "sim-model"
API_KEY = "sk-bench-not-a-secret"  # the simulator takes any key
AWS_ENV = {
    # Only ever sent to the local moto server started here.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}

POLL_S = 0.1


class BenchError(Exception):
    """The benchmark cannot go on; the message says which part failed."""


@dataclass(frozen=True)
class Config:
    """One benchmark run's parameters (a preset, then the command line's overrides)."""

    jobs: int = 400
    concurrency: int = 200
    tokens: int = 200
    tps: float = 20.0
    ttft_s: float = 0.2
    flush_interval_s: float = 0.4
    content_refresh_s: float = 1.0
    workers: int = 1
    label: str = "standard"
    skip_baselines: bool = False
    database_url: str = DEFAULT_DATABASE_URL
    sim_processes: int = 1
    max_waiting: int | None = None
    timeout_s: float | None = None
    # Caps each worker at this share of a core (cgroup v1 CPU quota): two capped workers fit
    # beside the simulator, moto and PostgreSQL on a 2-core machine, for the scaling figure.
    worker_cpu_quota: float | None = None
    # The wire format the simulator speaks to the worker and the baselines (bench/providers.py),
    # and whether the model is two deployments and a fallback (every call through the pick).
    provider: str = "openai"
    routing: bool = False
    # Answers that think first (reasoning a fifth of the text's length, paced) and end in two
    # parallel tool calls, their arguments in five pieces each (bench/providers.py's tools).
    rich: bool = False

    @property
    def capacity(self) -> int:
        return self.concurrency * self.workers

    @property
    def stream_s(self) -> float:
        """How long one answer takes at the simulator's pace (a rich one thinks first)."""
        thinking_s = max(1, self.tokens // 5) / self.tps if self.rich else 0.0
        return self.ttft_s + thinking_s + self.tokens / self.tps

    @property
    def waiting_limit(self) -> int:
        # moto scans the whole queue, running jobs' messages included, on every call: keep
        # it shallow. A worker with full slots only needs a few messages ready to refill them.
        return self.max_waiting or max(10, min(self.capacity, 100))

    @property
    def deadline_s(self) -> float:
        waves = math.ceil(self.jobs / self.capacity)
        return self.timeout_s or 3 * waves * self.stream_s + 120


PRESETS: dict[str, Config] = {
    # A few minutes on a 2-core machine: two waves of 200 streams of 200 chunks at 20/s.
    "standard": Config(),
    # The targets: 1,000 concurrent streams at 20 chunks/s, of 2,000 chunks each.
    "big": Config(jobs=1000, concurrency=1000, tokens=2000, tps=20.0, label="big"),
}


def messages_for(phase: str, index: int, cfg: Config) -> list[dict[str, str]]:
    """A unique prompt (its own deterministic answer) carrying the simulator's pacing."""
    directive = f"[[sim tokens={cfg.tokens} tps={cfg.tps:g} ttft={cfg.ttft_s:g}]]"
    if cfg.rich:
        reasoning = max(1, cfg.tokens // 5)  # as stream_s counts it
        directive += (
            f" [[sim reasoning={reasoning} think_s={reasoning / cfg.tps:g} tools=2 tool_chunks=5"
            " interleave=1 reasoning_style=reasoning_content]]"
        )
    return [{"role": "user", "content": f"bench {phase} {index}: tell me more {directive}"}]


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
