"""Worker slots: a job waiting for its provider's own limit lends its slot to other jobs."""

from __future__ import annotations

import asyncio
import uuid

from tests.core.doubles import FakeClaims, FakeFlushes, ScriptedCompleter
from tests.core.test_runner import REQUEST, make_runner
from worker.jobs import Claim, Ending
from worker.slots import Slots
from worker.writer import StreamWriter


async def test_a_parked_job_lends_its_slot_and_takes_one_back_before_new_jobs() -> None:
    slots = Slots(1, max_parked=1)
    slots.take()
    assert slots.free == 0
    provider = asyncio.Event()

    async def waiting_job() -> None:
        async with slots.parked_while():
            await provider.wait()

    parked = asyncio.create_task(waiting_job())
    await asyncio.sleep(0)
    assert (slots.free, slots.parked) == (1, 1)
    slots.take()  # another model's job runs meanwhile
    assert slots.free == 0
    provider.set()
    await asyncio.sleep(0.01)
    assert not parked.done()  # its slot is in use: it waits for one
    slots.give_back()  # the other job ends
    await asyncio.wait_for(parked, timeout=1)
    assert (slots.free, slots.parked) == (0, 0)


async def test_parked_jobs_are_bounded() -> None:
    slots = Slots(2, max_parked=1)
    slots.take()
    slots.take()
    never = asyncio.Event()

    async def waiting_job() -> None:
        async with slots.parked_while():
            await never.wait()

    first = asyncio.create_task(waiting_job())
    await asyncio.sleep(0)
    assert slots.free == 1
    slots.take()
    second = asyncio.create_task(waiting_job())
    await asyncio.sleep(0)
    assert slots.free == 0  # two parked would exceed the bound of one beyond the slots
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


async def test_a_job_behind_its_providers_limit_does_not_block_another_model() -> None:
    store = FakeFlushes()
    sink = StreamWriter(
        store, flush_interval_s=0.01, flush_max_chars=8192, content_refresh_s=0, lease_s=30
    )
    flushing = asyncio.create_task(sink.run())
    slots = Slots(1, max_parked=1)
    limited = ScriptedCompleter([["limited"]], limit=asyncio.Semaphore(0))
    free = ScriptedCompleter([["free"]])

    def claim() -> Claim:
        return Claim(job_id=uuid.uuid4(), attempt=1, lease=uuid.uuid4(), request_data=REQUEST)

    slots.take()
    waiting = asyncio.create_task(
        make_runner(sink, limited, claims=FakeClaims(), slots=slots).run(claim(), message_id=None)
    )
    assert await asyncio.wait_for(slots.wait_free(), timeout=1) == 1
    slots.take()
    outcome = await asyncio.wait_for(
        make_runner(sink, free, claims=FakeClaims(), slots=slots).run(claim(), message_id=None),
        timeout=5,
    )
    assert outcome.ending is Ending.COMPLETED
    slots.give_back()
    assert limited.limit is not None
    limited.limit.release()
    assert (await asyncio.wait_for(waiting, timeout=5)).ending is Ending.COMPLETED
    sink.close()
    await flushing
