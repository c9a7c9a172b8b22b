"""The soak run's verdict: every job's row and deltas against the simulator's deterministic
answer, the workers' logs, the queues, the takeovers; and the report (JSON and Markdown)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import RESULTS_DIR
from bench.soak_plan import KINDS, MAX_ATTEMPTS, JobSpec
from bench.stats import distribution

if TYPE_CHECKING:
    from bench.soak import Run

TERMINAL = ("completed", "failed", "cancelled")
TAKEOVER_LIMIT_S = 15.0
EXAMPLES = 10
# A kill may push a job past its fault's own ending: restarted at the limit, a stream that
# breaks then fails it `provider_unavailable`; a start past the limit fails it `internal`.
RESTARTS_ON_FAULT = ("dropped_mid_answer", "stall_long")


@dataclass
class Checks:
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    passed: list[str] = field(default_factory=list)

    def fail(self, name: str, detail: str) -> None:
        self.failures[name].append(detail)

    def declare(self, *names: str) -> None:
        self.passed.extend(names)

    def as_json(self) -> dict[str, Any]:
        return {
            name: {
                "passed": name not in self.failures,
                "failures": len(self.failures.get(name, [])),
                "examples": self.failures.get(name, [])[:EXAMPLES],
            }
            for name in dict.fromkeys([*self.passed, *self.failures])
        }


def _prefix_state(text: str, expected: str) -> str:
    if text == expected:
        return "exact"
    return "prefix" if expected.startswith(text) else "wrong"


@dataclass
class Tally:
    """What the per-job checks found, beside the named check failures."""

    lost: set[str] = field(default_factory=set)
    duplicated: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    attempts: Counter[int] = field(default_factory=Counter)
    cancelled_without_response: int = 0
    restarted_by: dict[str, list[float]] = field(default_factory=dict)


Deltas = dict[int, list[tuple[int, str]]]


async def check_run(
    run: Run, *, phase_s: float, drained: dict[str, Any], final_codes: list[int | None]
) -> dict[str, Any]:
    rows = await run.db.fetch(
        "SELECT id::text, status, attempts, error_code, error_message, partial_content,"
        " completed_at IS NOT NULL AS has_completed_at,"
        " response_data IS NOT NULL AS has_response_data FROM ai_streaming_jobs"
    )
    delta_rows = await run.db.fetch(
        "SELECT job_id::text, attempt, seq, content FROM ai_streaming_job_deltas"
        " ORDER BY job_id, attempt, seq"
    )
    deltas: dict[str, Deltas] = defaultdict(lambda: defaultdict(list))
    for d in delta_rows:
        deltas[d["job_id"]][d["attempt"]].append((d["seq"], d["content"]))
    endings: Counter[str] = Counter()
    events: Counter[str] = Counter()
    restarts: dict[str, list[str]] = defaultdict(list)
    takeovers: dict[str, list[float]] = defaultdict(list)
    for log in (log for slot in run.slots for log in slot.logs):
        log.poll()
        endings.update(log.endings)
        events.update(log.events)
        for job_id, errors in log.restart_errors.items():
            restarts[job_id].extend(errors)
        for job_id, stamps in log.taken_over.items():
            takeovers[job_id].extend(_epoch(stamp) for stamp in stamps)
    kills_hit: Counter[str] = Counter()
    for kill in run.faults.kills:
        kills_hit.update(kill.victims)
    checks = Checks()
    checks.declare(*CHECKS)
    tally = Tally()
    by_id = {row["id"]: row for row in rows}
    for job_id, spec in run.job_ids.items():
        row = by_id.get(job_id)
        if row is None:
            checks.fail("every_job_ended", f"{job_id}: no row")
            tally.lost.add(job_id)
            continue
        job = _Job(job_id, spec, row, deltas.get(job_id, {}), kills_hit[job_id])
        _check_job(job, checks, tally, endings[job_id], run.faults.cancels.get(job_id))
        _check_stall(job, checks, restarts.get(job_id, []))
    _check_run(run, checks, drained, final_codes, events)
    tally.restarted_by = _restart_mechanisms(run, takeovers)
    return _figures(
        run, checks, tally=tally, events=events, phase_s=phase_s, drained=drained,
        final_codes=final_codes,
    )  # fmt: skip


CHECKS = (
    "every_job_ended", "completed_at_set", "attempts_bounded", "completed_byte_exact",
    "completed_deltas_exact", "deltas_seq_without_gaps", "deltas_never_repeat_text",
    "cancelled_text_equals_deltas", "failed_text_is_prefix", "outcome_as_scripted",
    "response_data_set", "ended_once", "queue_and_dlq_empty", "poison_deleted",
    "no_job_crashed", "final_exit_codes_zero", "no_unexpected_exit", "takeover_within_15_s",
    "stall_timeout_honoured",
)  # fmt: skip
SILENT = "silent"  # the worker's words when it hangs up a stalled stream


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def _check_stall(job: _Job, checks: Checks, restart_errors: list[str]) -> None:
    """A long stall is hung up at the stall timeout; a shorter silence never is."""
    hung_up = any(SILENT in error for error in restart_errors)
    if job.spec.kind == "stall_long" and job.kills == 0 and not hung_up:
        checks.fail("stall_timeout_honoured", f"{job.tag}: not hung up ({restart_errors})")
    elif job.spec.kind in ("stall_short", "slow_stream") and hung_up:
        checks.fail("stall_timeout_honoured", f"{job.tag}: hung up ({restart_errors})")


def _restart_mechanisms(run: Run, takeovers: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each killed worker's job's restart delay, by what restarted it: a live worker's
    takeover of the expired lease, or the job's message coming back (visibility timeout)."""
    found: dict[str, list[float]] = {"takeover": [], "message": []}
    for kill in run.faults.kills:
        for job_id, seconds in kill.restarted_after_s.items():
            by_takeover = any(
                kill.at <= at <= kill.at + seconds + 1 for at in takeovers.get(job_id, [])
            )
            found["takeover" if by_takeover else "message"].append(seconds)
    return found


@dataclass
class _Job:
    job_id: str
    spec: JobSpec
    row: dict[str, Any]
    deltas: Deltas
    kills: int

    @property
    def label(self) -> str:
        code = self.row["error_code"]
        return self.row["status"] if code is None else f"{self.row['status']}/{code}"

    @property
    def tag(self) -> str:
        return (
            f"{self.job_id} ({self.spec.kind}, {self.label}, attempts {self.row['attempts']},"
            f" kills {self.kills})"
        )


def _check_job(
    job: _Job, checks: Checks, tally: Tally, endings: int, cancel: dict[str, Any] | None
) -> None:
    row, tag = job.row, job.tag
    tally.outcomes[job.label] += 1
    tally.by_kind[job.spec.kind][job.label] += 1
    tally.attempts[row["attempts"]] += 1
    if row["status"] not in TERMINAL:
        checks.fail("every_job_ended", tag)
        tally.lost.add(job.job_id)
        return
    if not row["has_completed_at"]:
        checks.fail("completed_at_set", tag)
    if not (row["attempts"] <= MAX_ATTEMPTS or _attempt_limit(row)):
        checks.fail("attempts_bounded", tag)
    if row["status"] != "cancelled" and not row["has_response_data"]:
        checks.fail("response_data_set", tag)
    if row["status"] == "cancelled" and not row["has_response_data"]:
        tally.cancelled_without_response += 1
    if endings > 1:
        checks.fail("ended_once", f"{tag}: {endings} endings logged")
        tally.duplicated.add(job.job_id)
    problem = _unscripted(job.spec, row, job.kills, cancel)
    if problem:
        checks.fail("outcome_as_scripted", f"{tag}: {problem}")
    _check_text(job, checks, tally)


def _check_text(job: _Job, checks: Checks, tally: Tally) -> None:
    """Deltas gapless and each attempt's a prefix of the answer; the row's text as its status
    promises: the whole answer, the deltas of the cancelled attempt, or a prefix."""
    row, tag, expected = job.row, job.tag, job.spec.expected_text
    for attempt, parts in job.deltas.items():
        if [seq for seq, _ in parts] != list(range(1, len(parts) + 1)):
            checks.fail("deltas_seq_without_gaps", f"{tag}: attempt {attempt}")
        if _prefix_state("".join(c for _, c in parts), expected) == "wrong":
            checks.fail("deltas_never_repeat_text", f"{tag}: attempt {attempt}")
            tally.duplicated.add(job.job_id)
    last = "".join(content for _, content in job.deltas.get(row["attempts"], []))
    text = row["partial_content"]
    if row["status"] == "completed":
        for name, got in (("completed_byte_exact", text), ("completed_deltas_exact", last)):
            state = _prefix_state(got, expected)
            if state != "exact":
                checks.fail(name, f"{tag}: {state}, {len(got)} of {len(expected)} chars")
                (tally.lost if state == "prefix" else tally.duplicated).add(job.job_id)
    elif row["status"] == "cancelled":
        if text != last or _prefix_state(text, expected) == "wrong":
            checks.fail("cancelled_text_equals_deltas", f"{tag}: {len(text)} vs {len(last)}")
    elif _prefix_state(text, expected) == "wrong":
        checks.fail("failed_text_is_prefix", tag)
        tally.duplicated.add(job.job_id)


def _check_run(
    run: Run,
    checks: Checks,
    drained: dict[str, Any],
    final_codes: list[int | None],
    events: Counter[str],
) -> None:
    depth = drained["queue_depth"]
    if not depth or any(n for counts in depth.values() for n in counts.values()):
        checks.fail("queue_and_dlq_empty", json.dumps(depth))
    poison_sent = sum(run.faults.poison_sent.values())
    if events["poison_message"] < poison_sent or depth.get("jobs", {}).get("visible"):
        checks.fail("poison_deleted", f"{events['poison_message']} logged of {poison_sent} sent")
    if events["job_crashed"]:
        checks.fail("no_job_crashed", f"{events['job_crashed']} job_crashed events")
    if final_codes != [0, 0]:
        checks.fail("final_exit_codes_zero", str(final_codes))
    for exit_record in run.faults.unexpected_exits:
        checks.fail("no_unexpected_exit", f"{exit_record['worker']}: {exit_record['exit_code']}")
    for kill in run.faults.kills:
        for job_id in sorted(kill.unresolved):
            checks.fail("takeover_within_15_s", f"{kill.worker}: {job_id} never restarted")
        for job_id, seconds in sorted(kill.restarted_after_s.items(), key=lambda kv: -kv[1]):
            if seconds >= TAKEOVER_LIMIT_S:
                checks.fail("takeover_within_15_s", f"{kill.worker}: {job_id} after {seconds} s")


def _figures(
    run: Run,
    checks: Checks,
    *,
    tally: Tally,
    events: Counter[str],
    phase_s: float,
    drained: dict[str, Any],
    final_codes: list[int | None],
) -> dict[str, Any]:
    jobs = len(run.job_ids)
    faults = run.faults
    delays = [s for kill in faults.kills for s in kill.restarted_after_s.values()]
    kinds = Counter(spec.kind for spec in run.job_ids.values())
    return {
        "label": "soak",
        "passed": not checks.failures,
        "minutes": run.args.minutes,
        "seed": run.args.seed,
        "phase_s": round(phase_s, 1),
        "jobs": jobs,
        "jobs_per_minute": round(jobs / (phase_s / 60), 1) if phase_s else None,
        "jobs_by_kind": dict(kinds.most_common()),
        "faults": {
            "kill_9": len(faults.kills),
            "backend_terminations": len(faults.terminations),
            "backends_terminated": sum(faults.terminations),
            "provider_faults_by_kind": {k.name: kinds[k.name] for k in KINDS if k.fault},
            "cancel_attempts": len(faults.cancels),
            "cancelled_by_app": sum(1 for c in faults.cancels.values() if c["cancelled"]),
            "poison_messages": sum(faults.poison_sent.values()),
            "poison_logged": events["poison_message"],
        },
        "outcomes": dict(tally.outcomes.most_common()),
        "outcomes_by_kind": {k: dict(v.most_common()) for k, v in tally.by_kind.items()},
        "attempts": {str(k): v for k, v in sorted(tally.attempts.items())},
        "lost": len(tally.lost),
        "duplicated": len(tally.duplicated),
        "cancelled_without_response_data": tally.cancelled_without_response,
        "takeover": {
            "restart_after_kill_s": distribution(delays, digits=2),
            "by_takeover_s": distribution(tally.restarted_by.get("takeover", []), digits=2),
            "by_message_s": distribution(tally.restarted_by.get("message", []), digits=2),
            "kills": [
                {
                    "worker": kill.worker,
                    "at": dt.datetime.fromtimestamp(kill.at, dt.UTC).isoformat(),
                    "exit_code": kill.exit_code,
                    "jobs_in_flight": len(kill.victims),
                    "restarted": len(kill.restarted_after_s),
                    "ended_without_restart": len(kill.ended_unrestarted),
                    "never_restarted": sorted(kill.unresolved),
                    "max_s": max(kill.restarted_after_s.values(), default=None),
                }
                for kill in faults.kills
            ],
        },
        "workers": {
            "processes": [entry for slot in run.slots for entry in slot.history],
            "final_exit_codes": final_codes,
            "unexpected_exits": faults.unexpected_exits,
            "log_events": {k: events[k] for k in sorted(events) if _notable(k)},
            "errors_logged": [
                {"worker": log.child_name, **error}
                for slot in run.slots
                for log in slot.logs
                for error in log.errors
            ][:50],
        },
        "backlog": distribution([float(n) for n in run.backlog], digits=1),
        "backlog_target": run.backlog_target,
        "drain": drained,
        "checks": checks.as_json(),
        "settings": {k: v for k, v in run.slots[0].env.items() if k.startswith("WORKER_")},
        "logs_dir": str(run.run_dir),
    }


def _attempt_limit(row: dict[str, Any]) -> bool:
    """Failed `internal` for being started more than the limit (attempts = limit + 1)."""
    return (
        row["status"] == "failed"
        and row["error_code"] == "internal"
        and row["attempts"] == MAX_ATTEMPTS + 1
        and "started" in (row["error_message"] or "")
    )


def _unscripted(
    spec: JobSpec, row: dict[str, Any], kills: int, cancel: dict[str, Any] | None
) -> str | None:
    """Why the row's ending is not what the job's fault (and the kills it met) lead to."""
    expect = spec.expect
    if spec.kind == "cancelled" and not (cancel and cancel["cancelled"]):
        expect = type(expect)("completed", None, 1)  # the app did not catch it streaming
    got = (row["status"], row["error_code"])
    if kills == 0:
        if (*got, row["attempts"]) != (expect.status, expect.error_code, expect.attempts):
            return f"expected {expect.status}/{expect.error_code} in {expect.attempts} attempts"
        return None
    allowed = {(expect.status, expect.error_code), ("completed", None)}
    if spec.kind in RESTARTS_ON_FAULT:
        allowed.add(("failed", "provider_unavailable"))
    if _attempt_limit(row):
        return None
    if got not in allowed or row["attempts"] > expect.attempts + kills:
        return (
            f"with {kills} kill(s): not {sorted(map(str, allowed))} in <= {expect.attempts + kills}"
        )
    return None


def _notable(event: str) -> bool:
    return event in {
        "poison_message", "job_taken_over", "attempt_restarted", "lease_lost", "job_crashed",
        "duplicate_delivery", "job_already_ended", "job_row_missing", "store_unavailable",
        "flush_error", "takeover_failed", "receive_failed", "provider_retry",
        "message_delete_failed", "visibility_extend_failed", "job_released",
    }  # fmt: skip


def write_report(report: dict[str, Any]) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = RESULTS_DIR / f"{stamp}-soak.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path


def markdown(r: dict[str, Any]) -> str:
    faults, takeover = r["faults"], r["takeover"]
    restart = takeover["restart_after_kill_s"]
    lines = [
        f"# Soak run {r.get('began_at', '')}: {'PASSED' if r['passed'] else 'FAILED'}",
        "",
        f"- {r['jobs']} jobs in {r['phase_s']:g} s of faults ({r['jobs_per_minute']} a minute),"
        f" two workers; {r.get('duration_s', '?')} s in all with the drain",
        f"- faults: {faults['kill_9']} kill -9 (each worker restarted at once),"
        f" {faults['backend_terminations']} rounds of pg_terminate_backend"
        f" ({faults['backends_terminated']} backends), provider faults in"
        f" {sum(faults['provider_faults_by_kind'].values())} jobs"
        f" ({_inline(faults['provider_faults_by_kind'])}), {faults['cancelled_by_app']} cancelled"
        f" by the app mid-stream, {faults['poison_messages']} poison messages",
        f"- outcomes: {_inline(r['outcomes'])}",
        f"- **lost: {r['lost']}, duplicated: {r['duplicated']}**",
        f"- restart of a killed worker's jobs after the kill: median {restart['p50']} s,"
        f" p99 {restart['p99']} s, max {restart['max']} s over {restart['n']} jobs"
        f" ({takeover['by_takeover_s']['n']} by a live worker's takeover, median"
        f" {takeover['by_takeover_s']['p50']} s; {takeover['by_message_s']['n']} only when their"
        f" message came back, median {takeover['by_message_s']['p50']} s)",
        f"- final exit codes {r['workers']['final_exit_codes']}; killed workers exited"
        f" {sorted({k['exit_code'] for k in takeover['kills']})}; unexpected exits"
        f" {len(r['workers']['unexpected_exits'])}",
        f"- queues after the drain: {json.dumps(r['drain']['queue_depth'])}",
        f"- error-level log events: {len(r['workers']['errors_logged'])}"
        f" ({_inline(Counter(e['event'] for e in r['workers']['errors_logged']))})",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for name, check in r["checks"].items():
        result = "pass" if check["passed"] else f"**FAIL** ({check['failures']})"
        lines.append(f"| {name} | {result} |")
    failing = {name: c for name, c in r["checks"].items() if not c["passed"]}
    for name, check in failing.items():
        lines += ["", f"## {name}: first failures", ""]
        lines += [f"- {example}" for example in check["examples"]]
    return "\n".join(lines) + "\n"


def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items())
