"""The soak run's jobs: which provider fault each one carries (a simulator directive in its
prompt), and what its row must show at the end. Every answer is the simulator's deterministic
one, so each job's whole text is known before it is sent."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench.config import MODEL
from simulator import answer_text

# The worker's settings the soak runs with (the expectations below follow from them).
MAX_ATTEMPTS = 3
PROVIDER_RETRIES = 3
STALL_TIMEOUT_S = 2.0
SHORT_STALL_S = 0.6  # under the stall timeout: a pause, not a fault for the worker
LONG_STALL_S = 4.0  # over it: the worker hangs up and starts the attempt over
TTFT_S = 0.1
SLOW_TPS = 1.0  # a chunk a second: silences under the stall timeout, to be ridden through


@dataclass(frozen=True)
class Expect:
    """A job's ending when nothing else (a kill) gets in its way."""

    status: str
    error_code: str | None
    attempts: int


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    # The directive's fault keys; `{k}` is replaced by a chunk number inside the answer.
    fault: str
    expect: Expect
    tokens: tuple[int, int] = (30, 120)
    tps: float = 40.0


COMPLETED_ONCE = Expect("completed", None, 1)
KINDS: tuple[Kind, ...] = (
    Kind("plain", 52, "", COMPLETED_ONCE),
    Kind("rate_limited_once", 6, "status=429 retry_after=0.5 times=1", COMPLETED_ONCE),
    Kind("rate_limited_always", 2, "status=429 retry_after=0.2",
         Expect("failed", "rate_limited", 1)),
    Kind("server_error_twice", 6, "status=500 times=2", COMPLETED_ONCE),
    Kind("server_error_always", 2, "status=500", Expect("failed", "provider_unavailable", 1)),
    Kind("dropped_before_text", 3, "drop_after=0 times=1", COMPLETED_ONCE),
    Kind("dropped_mid_answer", 7, "drop_after={k} times=1", Expect("completed", None, 2)),
    Kind("dropped_always", 2, "drop_after={k}",
         Expect("failed", "provider_unavailable", MAX_ATTEMPTS)),
    # The simulator cuts a stream after its stall: a short stall ends as a broken stream
    # (restarted), a long one is hung up by the worker at its stall timeout (restarted too).
    Kind("stall_short", 5, f"stall_after={{k}} stall_s={SHORT_STALL_S:g} times=1",
         Expect("completed", None, 2)),
    Kind("stall_long", 5, f"stall_after={{k}} stall_s={LONG_STALL_S:g} times=1",
         Expect("completed", None, 2)),
    Kind("slow_stream", 3, "", COMPLETED_ONCE, tokens=(4, 8), tps=SLOW_TPS),
    # Cancelled by the app once streaming; long enough to be caught mid-answer.
    Kind("cancelled", 4, "", Expect("cancelled", None, 1), tokens=(160, 240)),
    Kind("long", 4, "", COMPLETED_ONCE, tokens=(240, 400)),
)  # fmt: skip
BY_NAME = {kind.name: kind for kind in KINDS}
# Bodies that can never name a job: the worker must log them and delete them at once.
POISON_BODIES = (
    "not json at all",
    '{"job": "no jobId key"}',
    '{"jobId": "not-a-uuid"}',
    '{"jobId": 12345}',
    "[1, 2, 3]",
)


@dataclass(frozen=True)
class JobSpec:
    index: int
    kind: str
    tokens: int
    messages: list[dict[str, str]]

    @property
    def request(self) -> dict[str, Any]:
        return {"model": MODEL, "messages": self.messages}

    @property
    def expected_text(self) -> str:
        return answer_text(self.messages, self.tokens)

    @property
    def expect(self) -> Expect:
        return BY_NAME[self.kind].expect


class Plan:
    """Draws each next job's kind, length and fault point from a seeded generator."""

    def __init__(self, seed: int, nonce: str) -> None:
        self._random = random.Random(seed)  # noqa: S311 (a schedule, not a secret)
        self._nonce = nonce
        self._weights = [kind.weight for kind in KINDS]
        self.specs: list[JobSpec] = []

    def next_jobs(self, count: int) -> list[JobSpec]:
        drawn = [self._draw(len(self.specs) + i) for i in range(count)]
        self.specs.extend(drawn)
        return drawn

    def _draw(self, index: int) -> JobSpec:
        kind = self._random.choices(KINDS, weights=self._weights)[0]
        tokens = self._random.randint(*kind.tokens)
        fault = kind.fault.format(k=self._random.randint(1, tokens - 1))
        directive = f"[[sim tokens={tokens} tps={kind.tps:g} ttft={TTFT_S:g} {fault}]]".replace(
            " ]]", "]]"
        )
        text = f"soak {self._nonce} {index} ({kind.name}): tell me more {directive}"
        return JobSpec(index, kind.name, tokens, [{"role": "user", "content": text}])
