"""The supervisor's message disposition, concurrency bound and shutdown, in-process."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from tests.core.doubles import FakeClaims, FakeQueue, ScriptedRunner, delivery
from worker import exit_codes
from worker.exit_codes import ExitCode
from worker.jobs import Delivery, Ending, Status
from worker.slots import Slots
from worker.store import ClaimRefused
from worker.supervisor import Disposition, Mode, QueuePolicy, Supervisor

POLICY = QueuePolicy(receive_wait_s=1, visibility_timeout_s=30, lease_s=30, max_invisible_s=600)


def supervisor(
    queue: FakeQueue,
    claims: FakeClaims | None = None,
    runner: ScriptedRunner | None = None,
    *,
    concurrency: int = 4,
    mode: Mode = Mode.DRAIN,
    grace_s: float = 5,
    policy: QueuePolicy = POLICY,
) -> Supervisor:
    return Supervisor(
        queue=queue,
        store=claims or FakeClaims(),
        runner=runner or ScriptedRunner(),
        slots=Slots(concurrency, max_parked=concurrency),
        policy=policy,
        shutdown_grace_s=grace_s,
        mode=mode,
    )


async def dispose(
    message: Delivery, *, refusal: ClaimRefused | None = None, ending: Ending | None = None
) -> tuple[Counter[Disposition], FakeQueue]:
    queue = FakeQueue(inbox=[message])
    claims = FakeClaims()
    runner = ScriptedRunner()
    if message.job_id is not None:
        if refusal is not None:
            claims.refusals[message.job_id] = refusal
        if ending is not None:
            runner.endings[message.job_id] = ending
    outcomes = await supervisor(queue, claims, runner).run()
    return outcomes, queue


JOB = uuid.uuid4()


@pytest.mark.parametrize(
    ("refusal", "ending", "expected", "deleted"),
    [
        (None, Ending.COMPLETED, Disposition.COMPLETED, True),
        (None, Ending.FAILED, Disposition.FAILED, True),
        (None, Ending.CANCELLED, Disposition.CANCELLED, True),
        (None, Ending.LOST, Disposition.LOST, False),
        (ClaimRefused(status=Status.COMPLETED), None, Disposition.COMPLETED, True),
        (ClaimRefused(status=Status.FAILED), None, Disposition.FAILED, True),
        (
            ClaimRefused(status=Status.STREAMING, leased_by_message="other"),
            None,
            Disposition.DUPLICATE,
            True,
        ),
    ],
)
async def test_each_claim_result_and_ending_disposes_of_the_message(
    refusal: ClaimRefused | None, ending: Ending | None, expected: Disposition, deleted: bool
) -> None:
    message = delivery(JOB)
    outcomes, queue = await dispose(message, refusal=refusal, ending=ending)
    assert outcomes == Counter({expected: 1})
    assert queue.deleted == ([message] if deleted else [])
    assert queue.shown_again == []


async def test_a_poison_message_is_deleted_at_once() -> None:
    message = delivery(None)
    outcomes, queue = await dispose(message)
    assert outcomes == Counter({Disposition.POISON: 1})
    assert queue.deleted == [message]


@pytest.mark.parametrize(("receive_count", "retry_in_s"), [(1, 5), (3, 15), (40, 60)])
async def test_a_job_without_a_row_yet_comes_back_later_and_later(
    receive_count: int, retry_in_s: int
) -> None:
    message = delivery(JOB, receive_count=receive_count)
    outcomes, queue = await dispose(message, refusal=ClaimRefused())
    assert outcomes == Counter({Disposition.MISSING: 1})
    assert queue.deleted == []
    assert queue.shown_again == [(message, retry_in_s)]


async def test_our_own_message_back_during_its_lease_waits_for_the_lease_to_end() -> None:
    message = delivery(JOB, receive_count=2)
    refusal = ClaimRefused(
        status=Status.STREAMING, lease_left_s=7.4, leased_by_message=message.message_id
    )
    outcomes, queue = await dispose(message, refusal=refusal)
    assert outcomes == Counter({Disposition.DEFERRED: 1})
    assert queue.shown_again == [(message, 8)]
    assert queue.deleted == []


async def test_a_bug_in_a_job_does_not_stop_the_others() -> None:
    bad, good = uuid.uuid4(), uuid.uuid4()
    queue = FakeQueue(inbox=[delivery(bad), delivery(good)])
    runner = ScriptedRunner(endings={bad: RuntimeError("bug")})
    outcomes = await supervisor(queue, runner=runner).run()
    assert outcomes == Counter({Disposition.CRASHED: 1, Disposition.COMPLETED: 1})
    assert [d.job_id for d in queue.deleted] == [good]


async def test_never_more_jobs_at_once_than_the_concurrency() -> None:
    queue = FakeQueue(inbox=[delivery(uuid.uuid4()) for _ in range(25)])
    runner = ScriptedRunner()
    runner.gate.clear()
    run = asyncio.create_task(supervisor(queue, runner=runner, concurrency=4).run())
    await runner.wait_running(4)
    for _ in range(20):  # the loop has every chance to start more
        await asyncio.sleep(0)
    assert runner.running == 4
    assert len(queue.inbox) == 21
    runner.gate.set()
    outcomes = await run
    assert outcomes == Counter({Disposition.COMPLETED: 25})
    assert runner.most_running == 4


async def test_once_takes_a_single_message() -> None:
    queue = FakeQueue(inbox=[delivery(uuid.uuid4()) for _ in range(3)])
    outcomes = await supervisor(queue, mode=Mode.ONCE).run()
    assert outcomes == Counter({Disposition.COMPLETED: 1})
    assert len(queue.inbox) == 2


async def test_shutdown_hands_back_jobs_that_outlive_the_grace() -> None:
    message = delivery(JOB)
    queue = FakeQueue(inbox=[message])
    runner = ScriptedRunner()
    runner.gate.clear()
    worker = supervisor(queue, runner=runner, mode=Mode.DAEMON, grace_s=0.05)
    run = asyncio.create_task(worker.run())
    await runner.wait_running(1)
    worker.stop()
    outcomes = await asyncio.wait_for(run, timeout=5)
    assert outcomes == Counter({Disposition.HANDED_BACK: 1})
    assert queue.shown_again == [(message, 0)]
    assert queue.deleted == []


@pytest.mark.parametrize(
    ("dispositions", "code"),
    [
        ({}, ExitCode.OK),
        ({Disposition.COMPLETED: 3, Disposition.CANCELLED: 1}, ExitCode.OK),
        ({Disposition.DUPLICATE: 1, Disposition.DEFERRED: 1}, ExitCode.OK),
        ({Disposition.COMPLETED: 3, Disposition.FAILED: 1}, ExitCode.JOB_FAILED),
        ({Disposition.POISON: 1}, ExitCode.JOB_FAILED),
        ({Disposition.MISSING: 1}, ExitCode.JOB_FAILED),
        ({Disposition.LOST: 1}, ExitCode.JOB_FAILED),
        ({Disposition.HANDED_BACK: 1}, ExitCode.JOB_FAILED),
        ({Disposition.CRASHED: 1}, ExitCode.JOB_FAILED),
    ],
)
def test_exit_code_by_dispositions(dispositions: dict[Disposition, int], code: ExitCode) -> None:
    assert exit_codes.for_run(Counter(dispositions)) is code


async def test_free_slots_take_over_jobs_whose_worker_died() -> None:
    dead = [uuid.uuid4(), uuid.uuid4()]
    queue = FakeQueue()
    claims = FakeClaims(expired=list(dead))
    runner = ScriptedRunner()
    fast = QueuePolicy(
        receive_wait_s=1,
        visibility_timeout_s=30,
        lease_s=30,
        max_invisible_s=600,
        takeover_interval_s=0.01,
    )
    worker = supervisor(queue, claims, runner, mode=Mode.DAEMON, concurrency=4, policy=fast)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(runner.wait_started(2), timeout=5)
    worker.stop()
    outcomes = await asyncio.wait_for(run, timeout=5)
    assert outcomes == Counter({Disposition.COMPLETED: 2})
    assert sorted(runner.started) == sorted(dead)
    assert claims.takeover_limits[0] == 4  # as many as the free slots
    assert queue.deleted == []  # they came by no message


async def test_a_taken_over_job_handed_back_at_shutdown_gets_a_message() -> None:
    dead = uuid.uuid4()
    queue = FakeQueue()
    runner = ScriptedRunner()
    runner.gate.clear()
    fast = QueuePolicy(
        receive_wait_s=1,
        visibility_timeout_s=30,
        lease_s=30,
        max_invisible_s=600,
        takeover_interval_s=0.01,
    )
    worker = supervisor(
        queue, FakeClaims(expired=[dead]), runner, mode=Mode.DAEMON, grace_s=0.05, policy=fast
    )
    run = asyncio.create_task(worker.run())
    await runner.wait_running(1)
    worker.stop()
    outcomes = await asyncio.wait_for(run, timeout=5)
    assert outcomes == Counter({Disposition.HANDED_BACK: 1})
    assert queue.sent == [dead]


async def test_a_backlog_does_not_starve_the_takeover_of_a_dead_workers_jobs() -> None:
    dead = [uuid.uuid4(), uuid.uuid4()]
    queue = FakeQueue(inbox=[delivery(uuid.uuid4()) for _ in range(30)])
    runner = ScriptedRunner()
    fast = QueuePolicy(
        receive_wait_s=1,
        visibility_timeout_s=30,
        lease_s=30,
        max_invisible_s=600,
        takeover_interval_s=0.01,
    )
    worker = supervisor(queue, FakeClaims(expired=list(dead)), runner, concurrency=2, policy=fast)
    outcomes = await asyncio.wait_for(worker.run(), timeout=5)
    assert outcomes == Counter({Disposition.COMPLETED: 32})
    # Looked for them first, before the first receive: a restarted worker takes over at once.
    assert sorted(runner.started[:2]) == sorted(dead)
