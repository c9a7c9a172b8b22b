"""The worker's HTTP endpoint: `/metrics`, `/healthz` and `/readyz` (contract section 6)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from worker import metrics

# A probe slower than this counts as unreachable.
PROBE_TIMEOUT_S = 2.0


@contextlib.asynccontextmanager
async def serve(
    *,
    port: int,
    is_alive: Callable[[], bool],
    probes: dict[str, Callable[[], Awaitable[None]]],
    is_stopping: Callable[[], bool],
) -> AsyncIterator[int]:
    """Serve the endpoints on `port` (0 picks one) while the block runs; yields the port."""

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(
            text="ok\n" if is_alive() else "stuck\n", status=200 if is_alive() else 503
        )

    async def readyz(_: web.Request) -> web.Response:
        if is_stopping():
            return web.Response(text="shutting down\n", status=503)
        failed = [name for name, ok in zip(probes, await _probe(probes), strict=True) if not ok]
        if failed:
            return web.Response(text=f"unreachable: {', '.join(failed)}\n", status=503)
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=port)  # noqa: S104 (scraped from outside the container)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def _probe(probes: dict[str, Callable[[], Awaitable[None]]]) -> list[bool]:
    async def one(probe: Callable[[], Awaitable[None]]) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await probe()
        except Exception:  # noqa: BLE001 (any failure means not ready)
            return False
        return True

    return list(await asyncio.gather(*(one(probe) for probe in probes.values())))
