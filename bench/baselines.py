"""The two baselines, each run in its own process (`python -m bench --baseline KIND`) on the
worker's core, on the same streams as the worker: LiteLLM's `acompletion(stream=True)` alone
with the worker's model string, and the practical floor, a bare aiohttp client reading that
provider's wire format itself (bench/providers.py).

This module imports nothing of the harness, so that a baseline process holds only what it
measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.config import Config, messages_for
from bench.procfs import status_kib
from bench.providers import Streamer, floor_streamer, job_options, litellm_params


async def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """In this process: `--concurrency` streams at once, iterated to the end, no queue, no DB."""
    cpu_began = time.process_time()
    stream = await _litellm_streamer(args) if args.baseline == "litellm" else None
    session: aiohttp.ClientSession | None = None
    if stream is None:
        # limit=0: no connection cap, every stream at once as the worker would have them.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        stream = floor_streamer(session, args.provider, args.api_base, rich=args.rich)
    setup_cpu_s = time.process_time() - cpu_began
    rss_before = status_kib(os.getpid(), "VmRSS")
    cfg = Config(tokens=args.tokens, tps=args.tps, ttft_s=args.ttft, rich=args.rich)
    counter = [0, 0]  # chunks, characters of the assembled answers
    errors: Counter[str] = Counter()
    cpu_start, wall_start = time.process_time(), time.monotonic()
    complete = True
    try:
        async with asyncio.timeout(args.timeout):
            results = await asyncio.gather(
                *(
                    stream(messages_for(f"baseline-{args.baseline}", i, cfg), counter)
                    for i in range(args.concurrency)
                ),
                return_exceptions=True,
            )
        errors.update(type(r).__name__ for r in results if isinstance(r, BaseException))
    except TimeoutError:
        complete = False
    wall_s = time.monotonic() - wall_start
    share = (time.process_time() - cpu_start) / wall_s
    # LiteLLM runs its logging callbacks as tasks after a stream ends: count their CPU too.
    await asyncio.sleep(0.5)
    cpu_s = time.process_time() - cpu_start
    if session is not None:
        await session.close()
    chunks = counter[0]
    return {
        "kind": args.baseline,
        "provider": args.provider,
        "complete": complete,
        "streams": args.concurrency,
        "chunks": chunks,
        "expected_chunks": args.concurrency * args.tokens,
        "characters": counter[1],
        "errors": dict(errors),
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_chunk": round(cpu_s / chunks * 1e6, 1) if chunks else None,
        "cpu_share_of_its_core": round(share, 3),
        "setup_cpu_s": round(setup_cpu_s, 2),
        "rss_mib": {
            "before_streams": round(rss_before / 1024, 1),
            "peak": round(status_kib(os.getpid(), "VmHWM") / 1024, 1),
        },
        "rss_kib_per_stream": round(
            (status_kib(os.getpid(), "VmHWM") - rss_before) / args.concurrency, 1
        ),
    }


async def _litellm_streamer(args: argparse.Namespace) -> Streamer:
    """LiteLLM out of the box: `acompletion(stream=True)` iterated to the end."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import: stay offline
    import litellm  # noqa: PLC0415 (after the line above, and only in this baseline)

    litellm.suppress_debug_info = True
    params = {
        **litellm_params(args.provider, args.api_base),
        **job_options(rich=args.rich, provider=args.provider),
    }

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        response = await litellm.acompletion(
            **params,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            num_retries=0,
        )
        parts: list[str] = []
        async for chunk in response:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if text := delta.content:
                parts.append(text)
                counter[0] += 1
            elif getattr(delta, "reasoning_content", None) or delta.tool_calls:
                counter[0] += 1
        counter[1] += len("".join(parts))

    return stream
