"""The writer's flush state machine, against an in-process store: what each flush asks the
database to write, and what the writer does with each answer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.core.doubles import FakeFlushes, claim_for
from worker import metrics
from worker.errors import ProviderUnavailable
from worker.jobs import Ending, Outcome, Status
from worker.store import StoreUnavailable
from worker.writer import JobStopped, StreamWriter


def writer(
    store: FakeFlushes, *, refresh_s: float = 0, max_chars: int = 8192, interval_s: float = 0.05
) -> StreamWriter:
    return StreamWriter(
        store,
        flush_interval_s=interval_s,
        flush_max_chars=max_chars,
        content_refresh_s=refresh_s,
        lease_s=30,
    )


async def test_the_first_text_moves_the_row_to_streaming_and_deltas_are_numbered() -> None:
    store = FakeFlushes()
    sink = writer(store)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append("Hel")
    buffer.append("lo")
    await sink.flush()
    buffer.append(", world")
    await sink.flush()
    first, second = store.items_for(buffer.claim.job_id)
    assert (first.seq, first.delta, first.status) == (1, "Hello", Status.STREAMING)
    assert (second.seq, second.delta, second.status) == (2, ", world", None)
    assert buffer.streaming


async def test_nothing_new_means_no_write() -> None:
    store = FakeFlushes()
    sink = writer(store)
    sink.open(claim_for(uuid.uuid4()))
    await sink.flush()
    assert store.batches == []


async def test_one_statement_carries_every_job_with_new_text() -> None:
    store = FakeFlushes()
    sink = writer(store)
    buffers = [sink.open(claim_for(uuid.uuid4())) for _ in range(50)]
    for index, buffer in enumerate(buffers):
        buffer.append(f"text {index}")
    await sink.flush()
    assert len(store.batches) == 1
    assert [item.delta for item in store.batches[0]] == [f"text {i}" for i in range(50)]


async def test_partial_content_waits_for_the_refresh_then_catches_up_whole() -> None:
    store = FakeFlushes()
    sink = writer(store, refresh_s=3600)
    buffer = sink.open(claim_for(uuid.uuid4()))
    for piece in ("a", "b", "c"):
        buffer.append(piece)
        await sink.flush()
    assert [item.refresh for item in store.items_for(buffer.claim.job_id)] == [None] * 3
    buffer.append("d")
    ending = asyncio.create_task(sink.finish(buffer, Outcome(Ending.COMPLETED)))
    await asyncio.sleep(0)
    await sink.flush()
    result = await ending
    last = store.items_for(buffer.claim.job_id)[-1]
    assert result.applied
    assert (last.delta, last.refresh, last.refresh_from) == ("d", "abcd", 0)
    assert last.status is Status.COMPLETED


async def test_refresh_zero_refreshes_on_every_flush() -> None:
    store = FakeFlushes()
    sink = writer(store, refresh_s=0)
    buffer = sink.open(claim_for(uuid.uuid4()))
    for piece in ("a", "b"):
        buffer.append(piece)
        await sink.flush()
    items = store.items_for(buffer.claim.job_id)
    assert [(i.refresh, i.refresh_from) for i in items] == [("a", 0), ("b", 1)]


async def test_a_lost_connection_retries_the_very_same_batch() -> None:
    store = FakeFlushes(fail_next=1)
    sink = writer(store)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append("once")
    await sink.flush()
    assert len(store.batches) == 2
    assert store.batches[0] == store.batches[1]
    buffer.append(" more")
    await sink.flush()
    assert store.batches[-1][0].seq == 2


async def test_a_cancelled_row_stops_the_job_and_releases_its_finish() -> None:
    store = FakeFlushes()
    sink = writer(store)
    buffer = sink.open(claim_for(uuid.uuid4()))
    store.refuse[buffer.claim.job_id] = Status.CANCELLED
    streaming = asyncio.Event()

    async def job() -> None:
        async with buffer.stoppable():
            buffer.append("text")
            streaming.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(job())
    await streaming.wait()
    await sink.flush()
    with pytest.raises(JobStopped) as stopped:
        await task
    assert stopped.value.cancelled
    result = await sink.finish(buffer, Outcome(Ending.FAILED, error=ProviderUnavailable("x")))
    assert result.cancelled
    await sink.flush()
    assert len(store.batches) == 1  # a stopped job is no longer flushed


async def test_a_big_buffer_wakes_the_writer_before_its_beat() -> None:
    store = FakeFlushes()
    sink = writer(store, max_chars=10, interval_s=3600)  # only a wake-up flushes in time
    running = asyncio.create_task(sink.run())
    buffer = sink.open(claim_for(uuid.uuid4()))
    await asyncio.sleep(0)
    buffer.append("x" * 10)
    async with asyncio.timeout(5):
        await store.written.wait()
    sink.close()
    await running
    assert store.batches[0][0].delta == "x" * 10


async def test_handing_back_writes_pending_with_the_last_text() -> None:
    store = FakeFlushes()
    sink = writer(store)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append("so far")
    ending = asyncio.create_task(sink.finish(buffer, Outcome(Ending.HANDED_BACK)))
    await asyncio.sleep(0)
    await sink.flush()
    await ending
    [item] = store.items_for(buffer.claim.job_id)
    assert (item.delta, item.status) == ("so far", Status.PENDING)


async def test_reasoning_alone_is_a_first_token_and_stays_out_of_the_text() -> None:
    store = FakeFlushes()
    sink = writer(store, refresh_s=0)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append_reasoning("Let me think")
    await sink.flush()
    buffer.append_reasoning(". Done.")
    buffer.append("Answer")
    await sink.flush()
    first, second = store.items_for(buffer.claim.job_id)
    assert (first.seq, first.delta, first.reasoning, first.status) == (
        1,
        "",
        "Let me think",
        Status.STREAMING,
    )
    assert (first.refresh, first.refresh_reasoning) == ("", "Let me think")
    assert (second.seq, second.delta, second.reasoning, second.status) == (
        2,
        "Answer",
        ". Done.",
        None,
    )
    assert (second.refresh, second.refresh_reasoning) == ("Answer", ". Done.")


async def test_a_cancelled_job_commits_the_text_the_refused_flush_carried() -> None:
    store = FakeFlushes()
    sink = writer(store, refresh_s=3600)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append("one ")
    buffer.append_reasoning("hm")
    await sink.flush()  # applied: delta 1, not yet in partial_content
    store.refuse[buffer.claim.job_id] = Status.CANCELLED
    buffer.append("two ")
    await sink.flush()  # refused: the app cancelled meanwhile
    buffer.append("three")  # streamed before the task stopped
    await sink.settle_cancelled(buffer, {"finish_reason": "cancelled"})
    [(tail, data)] = store.settled
    assert (tail.seq, tail.delta, tail.reasoning) == (2, "two three", None)
    assert (tail.refresh, tail.refresh_reasoning, tail.refresh_from) == ("one two three", "hm", 0)
    assert data == {"finish_reason": "cancelled"}


async def test_an_unexpected_error_does_not_stop_the_writer() -> None:
    store = FakeFlushes(fail_next=1, fail_with=RuntimeError("cannot switch to state 12"))
    sink = writer(store)
    buffer = sink.open(claim_for(uuid.uuid4()))
    buffer.append("kept")
    await sink.flush()
    assert len(store.batches) == 2
    assert store.batches[0] == store.batches[1]


async def test_a_stopped_writer_releases_every_job_waiting_for_its_commit() -> None:
    store = FakeFlushes()
    sink = writer(store, interval_s=3600)
    buffer = sink.open(claim_for(uuid.uuid4()))
    running = asyncio.create_task(sink.run())
    ending = asyncio.create_task(sink.finish(buffer, Outcome(Ending.HANDED_BACK)))
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(ending, timeout=1)
    with pytest.raises(StoreUnavailable):
        await sink.finish(sink.open(claim_for(uuid.uuid4())), Outcome(Ending.COMPLETED))


async def test_a_jobs_first_words_are_flushed_at_once_the_others_text_keeps_its_beat() -> None:
    store = FakeFlushes()
    sink = writer(store, interval_s=3600)  # the beat never comes during this test
    early_before = early_flushes()
    running = asyncio.create_task(sink.run())
    first = sink.open(claim_for(uuid.uuid4()))
    first.append("Hello")
    async with asyncio.timeout(1):
        await store.written.wait()
    store.written.clear()
    first.append(" again")  # not a first token any more: it waits for the beat
    second = sink.open(claim_for(uuid.uuid4()))
    second.append("Hi")  # another job's first words: flushed early, on their own
    async with asyncio.timeout(1):
        await store.written.wait()
    sink.close()
    await running
    assert [[item.delta for item in batch] for batch in store.batches[:2]] == [
        ["Hello"],
        ["Hi"],
    ]
    assert [item.delta for item in store.batches[-1]] == [" again"]  # written at close
    assert early_flushes() - early_before == 2  # what the bench counts as extra statements


def early_flushes() -> float:
    return metrics.REGISTRY.get_sample_value("streaming_worker_db_early_flushes_total") or 0.0
