"""Coalescing concurrent calls into batched round trips, without a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Batcher(Generic[ItemT, ResultT]):
    """Sends items in batches of up to `max_size`, one batch in flight at a time.

    The first caller becomes the sender: it yields once, so that callers started in the same
    event-loop pass (one receive's jobs) join its batch, then sends until nothing is queued.
    Whatever arrives while a batch is in flight goes in the next one. A batch that fails
    fails each of its callers with the same error.
    """

    def __init__(
        self,
        send: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        max_size: int,
        interrupted: Callable[[], Exception],
    ) -> None:
        self._send = send
        self._max_size = max_size
        self._interrupted = interrupted
        self._queued: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._sending = False

    async def submit(self, item: ItemT) -> ResultT:
        done: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queued.append((item, done))
        if not self._sending:
            await self._send_queued()
        return await done

    async def _send_queued(self) -> None:
        self._sending = True
        batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        try:
            await asyncio.sleep(0)
            while self._queued:
                batch = self._queued[: self._max_size]
                del self._queued[: self._max_size]
                try:
                    results = await self._send([item for item, _ in batch])
                except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
                    for _, done in batch:
                        _fail(done, error)
                else:
                    for (_, done), result in zip(batch, results, strict=True):
                        if not done.done():
                            done.set_result(result)
                batch = []
        finally:
            self._sending = False
            # The sender was cancelled mid-way (shutdown, or its job stopped): the others must
            # not wait for it. They see an error they may retry, and one of them sends next.
            for _, done in [*batch, *self._queued]:
                _fail(done, self._interrupted())
            self._queued.clear()


def _fail(done: asyncio.Future[ResultT], error: Exception) -> None:
    if not done.done():
        done.set_exception(error)
        # Its caller may be gone by the time it could await it: don't log it as lost.
        done.exception()
