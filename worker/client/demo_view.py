"""What the demo shows and checks: its jobs (plain answers, a thinking job, a tool-calling
job) with what the simulator will answer them, the live view of their rows, the summary."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

BAR_WIDTH = 28


@dataclass(frozen=True, slots=True)
class DemoJob:
    """One demo job and what the simulator answers it: the text, the reasoning, the calls."""

    kind: str  # "answer", "thinking" or "tools"
    request: dict[str, Any]
    answer: str
    tokens: int  # completion tokens the answer will count (reasoning and arguments included)
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()  # as `response_data.message.tool_calls`

    def check(self, row: dict[str, Any]) -> str | None:
        """None when the row ended as the simulator answered; else what differs."""
        response = row.get("response_data") or {}
        if row.get("status") != "completed":
            return f"status {row.get('status')}"
        if row["partial_content"] != self.answer:
            return "answer differs"
        if row["reasoning_content"] != self.reasoning:
            return f"reasoning differs ({len(row['reasoning_content'])} characters)"
        finish = "tool_calls" if self.tool_calls else "stop"
        if response.get("finish_reason") != finish:
            return f"finish_reason {response.get('finish_reason')}"
        if list(self.tool_calls) != list((response.get("message") or {}).get("tool_calls") or []):
            return "tool calls differ"
        return None

    def expected(self) -> str:
        """What the check compares, in a few words."""
        if self.kind == "thinking":
            return f"reasoning ({len(self.reasoning)} characters) and answer as the simulator sent"
        if self.kind == "tools":
            names = ", ".join(call["function"]["name"] for call in self.tool_calls)
            return f"finish_reason tool_calls, {names} called with the simulator's arguments and id"
        return "answer byte-exact"


@dataclass
class LiveView:
    """One progress bar per job with its speed; on a pipe, one line per event instead."""

    jobs: dict[uuid.UUID, DemoJob]
    tty: bool
    started: float = field(default_factory=time.monotonic)
    first_output_at: dict[uuid.UUID, float] = field(default_factory=dict)
    announced: set[uuid.UUID] = field(default_factory=set)
    drawn_lines: int = 0

    def update(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        now = time.monotonic()
        for job_id, row in rows.items():
            # The first output of any kind: a thinking job's reasoning comes before its text.
            if (row["partial_content"] or row["reasoning_content"]) and (
                job_id not in self.first_output_at
            ):
                self.first_output_at[job_id] = now
                if not self.tty and len(self.first_output_at) == 1:
                    print(f"first tokens after {now - self.started:.1f} s", flush=True)
        if self.tty:
            self._redraw(rows, now)
        else:
            self._log_finished(rows)

    def _redraw(self, rows: dict[uuid.UUID, dict[str, Any]], now: float) -> None:
        lines = [self._line(job_id, rows.get(job_id, {}), now) for job_id in self.jobs]
        done = sum(1 for row in rows.values() if ended(row))
        total_tokens = sum(self._tokens_so_far(job_id, rows.get(job_id, {})) for job_id in rows)
        elapsed = now - self.started
        lines.append(
            f"{done}/{len(self.jobs)} done · {elapsed:5.1f} s · "
            f"{total_tokens / elapsed if elapsed else 0:6.0f} tok/s in all"
        )
        up = f"\x1b[{self.drawn_lines}F" if self.drawn_lines else ""
        sys.stdout.write(up + "".join(f"{line}\x1b[K\n" for line in lines))
        sys.stdout.flush()
        self.drawn_lines = len(lines)

    def _line(self, job_id: uuid.UUID, row: dict[str, Any], now: float) -> str:
        job = self.jobs[job_id]
        status = row.get("status", "?")
        text, reasoning = row.get("partial_content", ""), row.get("reasoning_content", "")
        if job.kind == "tools" and ended(row):
            shown = "→ " + "; ".join(_call_text(call) for call in _calls(row))
        elif job.kind == "thinking" and reasoning and not text and not ended(row):
            status = "thinking"
            shown = _bar(len(reasoning), len(job.reasoning), fill="░")
        else:
            shown = _bar(len(text), len(job.answer), fill="█")
        return (
            f"{str(job_id)[:8]}  {job.kind:<8} {status:<10} {_fit(shown)} "
            f"{self._tokens_so_far(job_id, row):>4}/{job.tokens} tok"
            f" {self._rate(job_id, row, now):6.1f} tok/s"
        )

    def _tokens_so_far(self, job_id: uuid.UUID, row: dict[str, Any]) -> int:
        usage = (row.get("response_data") or {}).get("usage") or {}
        if "completion_tokens" in usage:
            return int(usage["completion_tokens"])
        # While streaming, the share of the known answer (and reasoning) already written.
        job = self.jobs[job_id]
        written = len(row.get("partial_content", "")) + len(row.get("reasoning_content", ""))
        return round(job.tokens * written / max(len(job.answer) + len(job.reasoning), 1))

    def _rate(self, job_id: uuid.UUID, row: dict[str, Any], now: float) -> float:
        finished = stream_rate(row.get("response_data"))
        if finished is not None:
            return finished
        since = self.first_output_at.get(job_id)
        if since is None or now <= since:
            return 0.0
        return self._tokens_so_far(job_id, row) / (now - since)

    def _log_finished(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        for job_id, row in rows.items():
            if job_id in self.announced or not ended(row):
                continue
            self.announced.add(job_id)
            job = self.jobs[job_id]
            rate = stream_rate(row["response_data"])
            speed = "" if rate is None else f", {rate:.0f} tok/s"
            what = ""
            if job.kind == "thinking":
                what = f", {len(row['reasoning_content'])} chars of reasoning"
            elif job.kind == "tools":
                what = ", calls " + "; ".join(_call_text(call) for call in _calls(row))
            print(
                f"{str(job_id)[:8]} {job.kind} {row['status']}: "
                f"{self._tokens_so_far(job_id, row)} tokens{speed}{what}"
                f" ({len(self.announced)}/{len(self.jobs)})",
                flush=True,
            )

    def print_summary(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        wall_s = time.monotonic() - self.started
        print(
            f"\n{'job':<8}  {'kind':<8} {'status':<10} {'as expected':<11} {'tokens':>6}"
            f" {'ttft ms':>7} {'tok/s':>6}"
        )
        problems: dict[uuid.UUID, str] = {}
        for job_id, job in self.jobs.items():
            row = rows[job_id]
            response = row["response_data"] or {}
            usage = response.get("usage") or {}
            problem = job.check(row)
            if problem is not None:
                problems[job_id] = problem
            print(
                f"{str(job_id)[:8]}  {job.kind:<8} {row['status']:<10}"
                f" {'yes' if problem is None else 'no':<11}"
                f" {usage.get('completion_tokens', 0):>6} {response.get('ttft_ms') or 0:>7}"
                f" {stream_rate(response) or 0.0:>6.1f}"
            )
        print()
        for job_id, job in self.jobs.items():
            if job.kind != "answer":
                verdict = f"no, {problems[job_id]}" if job_id in problems else "yes"
                print(f"{job.kind} job {str(job_id)[:8]}: {job.expected()}: {verdict}")
        completed = sum(1 for row in rows.values() if row["status"] == "completed")
        print(
            f"{completed}/{len(self.jobs)} completed, {len(self.jobs) - len(problems)} as"
            f" expected, {wall_s:.1f} s wall, {completed / wall_s:.2f} jobs/s"
        )
        unfinished = sum(1 for row in rows.values() if not ended(row))
        if unfinished:
            print(
                f"stopped early: {unfinished} jobs did not finish and were handed back"
                " (status pending, message visible again)"
            )


def _bar(done: int, whole: int, *, fill: str) -> str:
    filled = min(BAR_WIDTH, int(BAR_WIDTH * done / max(whole, 1)))
    return fill * filled + "·" * (BAR_WIDTH - filled)


def _fit(shown: str) -> str:
    """A bar, or a tool call's text, in the bar's width."""
    if len(shown) > BAR_WIDTH:
        return shown[: BAR_WIDTH - 1] + "…"
    return shown.ljust(BAR_WIDTH)


def _calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    message = (row.get("response_data") or {}).get("message") or {}
    return list(message.get("tool_calls") or [])


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    return f"{function.get('name')}({function.get('arguments')})"


def ended(row: dict[str, Any]) -> bool:
    return row.get("status") in ("completed", "failed", "cancelled")


def stream_rate(response: dict[str, Any] | None) -> float | None:
    """Tokens per second while streaming: after the first token, to the end."""
    if not response:
        return None
    tokens = (response.get("usage") or {}).get("completion_tokens")
    duration_ms, ttft_ms = response.get("duration_ms"), response.get("ttft_ms") or 0
    if not tokens or not duration_ms or duration_ms <= ttft_ms:
        return None
    return float(tokens) / ((float(duration_ms) - float(ttft_ms)) / 1000)
