"""Batcher: calls made in the same event-loop pass share one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from worker.batching import Batcher


class Interrupted(Exception):
    pass


class Recorder:
    def __init__(self, *, fail: Exception | None = None, block: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def send(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


def batcher(recorder: Recorder, max_size: int = 10) -> Batcher[int, int]:
    return Batcher(recorder.send, max_size=max_size, interrupted=Interrupted)


async def test_calls_made_together_share_one_batch() -> None:
    recorder = Recorder()
    batch = batcher(recorder)
    results = await asyncio.gather(*(batch.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert recorder.batches == [list(range(7))]


async def test_batches_hold_at_most_max_size() -> None:
    recorder = Recorder()
    batch = batcher(recorder, max_size=3)
    await asyncio.gather(*(batch.submit(i) for i in range(8)))
    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]


async def test_what_arrives_during_a_round_trip_goes_in_the_next() -> None:
    recorder = Recorder(block=True)
    batch = batcher(recorder)
    first = asyncio.gather(*(batch.submit(i) for i in range(2)))
    await asyncio.sleep(0.01)
    later = asyncio.gather(*(batch.submit(i) for i in range(2, 4)))
    await asyncio.sleep(0.01)
    recorder.release.set()
    assert await first == [0, 10]
    assert await later == [20, 30]
    assert recorder.batches == [[0, 1], [2, 3]]


async def test_a_failed_batch_fails_each_caller_with_its_error() -> None:
    error = ValueError("down")
    batch = batcher(Recorder(fail=error))
    results = await asyncio.gather(*(batch.submit(i) for i in range(3)), return_exceptions=True)
    assert results == [error, error, error]


async def test_a_cancelled_sender_does_not_strand_the_others() -> None:
    recorder = Recorder(block=True)
    batch = batcher(recorder)
    sender = asyncio.create_task(batch.submit(1))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(batch.submit(2))
    await asyncio.sleep(0.01)
    sender.cancel()
    with pytest.raises(Interrupted):
        await waiter
    # The batcher works again afterwards.
    recorder.release.set()
    assert await batch.submit(3) == 30
