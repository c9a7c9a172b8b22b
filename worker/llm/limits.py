"""Per-model parallel-stream slots, as LiteLLM's Router computes a deployment's limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from worker.llm.catalog import ModelCatalog
from worker.llm.target import Target

log = structlog.get_logger(__name__)


class ParallelLimits:
    """One semaphore per models-file name whose deployments all have a limit."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._limits: dict[str, asyncio.Semaphore] = {}
        for name in catalog.names:
            limit = catalog.parallel_limit(name)
            if limit is not None:
                self._limits[name] = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def permit(self, target: Target) -> AsyncIterator[None]:
        """Hold one of the model's slots for a whole attempt; wait for one.

        LiteLLM's Router answers a request beyond a deployment's `max_parallel_requests`
        (or the limit it derives from `rpm`/`tpm`) with an immediate 429 and keeps its slot
        until the stream ends; waiting here first means such jobs queue instead of failing.
        """
        limit = self._limits.get(target.model) if target.routed else None
        if limit is None:
            yield
            return
        if limit.locked():
            log.info("provider_limit_wait", model=target.model)
        async with limit:
            yield
