"""The request log: what every route received and how each request ended; fault counters.

Records are plain JSON-able dicts, served at `GET /_sim/requests` (the benchmark reads them
from every process) and updated while a stream runs (`outcome`, `chunks_sent`). `Received`
is a typed snapshot of one record for tests in the same process.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Outcomes a record goes through: "streaming", then "completed", "error:<status>",
# "dropped", "stalled" or "client_disconnected".


@dataclass(frozen=True)
class Received:
    """One request as the simulator saw it."""

    provider: str
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    prompt: str
    outcome: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> Received:
        return cls(
            provider=record["provider"],
            method=record["method"],
            path=record["path"],
            raw_path=record["raw_path"],
            query=dict(record["query"]),
            headers=dict(record["headers"]),
            body=record["body"],
            prompt=record["prompt"],
            outcome=record["outcome"],
        )

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def wire(self) -> str:
        """Everything that reached the simulator, as one string, for "did X leak" checks."""
        return json.dumps([self.raw_path, self.query, self.headers, self.body], ensure_ascii=False)


@dataclass
class RequestLog:
    """Every request's record, the fault counters and how many streams each route runs."""

    records: list[dict[str, Any]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    active: Counter[str] = field(default_factory=Counter)
    max_active: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        self.records.append(record)
        return record

    def count_fault(self, fingerprint: str) -> int:
        """How many requests for this conversation a fault has now struck (for `times`)."""
        self.faults[fingerprint] += 1
        return self.faults[fingerprint]

    def stream_started(self, provider: str) -> None:
        self.active[provider] += 1
        self.max_active[provider] = max(self.max_active[provider], self.active[provider])

    def stream_ended(self, provider: str) -> None:
        self.active[provider] -= 1

    def clear(self) -> None:
        """Forget every record and counter: faults with `times` strike again."""
        self.records.clear()
        self.faults.clear()
        self.max_active.clear()

    def received(self, *, provider: str | None = None, prompt: str | None = None) -> list[Received]:
        """The requests so far, optionally only one provider's or one prompt's."""
        return [
            Received.of(record)
            for record in self.records
            if (provider is None or record["provider"] == provider)
            and (prompt is None or record["prompt"] == prompt)
        ]
