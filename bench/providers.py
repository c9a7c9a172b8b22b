"""Each provider as the benchmark runs it: its models-file entry against the simulator, the
keyword arguments LiteLLM's `acompletion` takes for it, and the floor: a minimal aiohttp
reader of its wire format (the practical lower bound of CPU per chunk).

Imports nothing of the harness or LiteLLM: a baseline process holds only what it measures.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.config import API_KEY, MODEL, REGION

PROVIDERS = ("openai", "azure", "gemini", "bedrock")
AZURE_API_VERSION = "2024-10-21"
FALLBACK_MODEL = "sim-fallback"

# The tools a rich run's jobs offer (`--rich`): the simulator calls both.
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}
    for name in ("search", "lookup")
]  # fmt: skip


def job_options(*, rich: bool, provider: str) -> dict[str, Any]:
    """A job's options: a rich run offers the tools (and asks Gemini to show its thoughts)."""
    if not rich:
        return {}
    return {"tools": TOOLS, **({"reasoning_effort": "low"} if provider == "gemini" else {})}


Streamer = Callable[[list[dict[str, str]], list[int]], Awaitable[None]]
_PRICES = {"input_cost_per_token": 0.00000015, "output_cost_per_token": 0.0000006}


def litellm_params(provider: str, sim_url: str, model: str = MODEL) -> dict[str, Any]:
    """The models-file settings (and `acompletion`'s keywords) for `provider` on the simulator."""
    if provider == "openai":
        return {"model": f"openai/{model}", "api_base": f"{sim_url}/v1", "api_key": API_KEY}
    if provider == "azure":
        return {
            "model": f"azure/{model}",
            "api_base": sim_url,
            "api_key": API_KEY,
            "api_version": AZURE_API_VERSION,
        }
    if provider == "gemini":
        return {"model": f"gemini/{model}", "api_base": sim_url, "api_key": API_KEY}
    if provider == "bedrock":
        # Credentials from the environment (the harness's AWS_ENV): SigV4 over every request.
        return {
            "model": f"bedrock/converse/{model}",
            "aws_bedrock_runtime_endpoint": sim_url,
            "aws_region_name": REGION,
        }
    raise ValueError(f"unknown provider {provider!r}")


def models_document(
    sim_url: str, provider: str = "openai", *, routing: bool = False
) -> dict[str, Any]:
    """One priced model on `provider`; with `routing`, two deployments of it and a fallback,
    with cooldowns on, so that every call goes through the Router's pick."""
    entry = {"model_name": MODEL, "litellm_params": litellm_params(provider, sim_url)}
    entries = [{**entry, "model_info": _PRICES}]
    settings: dict[str, Any] = {"num_retries": 0}
    if routing:
        entries.append({**entry, "model_info": _PRICES})
        fallback = litellm_params(provider, sim_url, FALLBACK_MODEL)
        entries.append(
            {"model_name": FALLBACK_MODEL, "litellm_params": fallback, "model_info": _PRICES}
        )
        settings |= {"fallbacks": [{MODEL: [FALLBACK_MODEL]}], "disable_cooldowns": False}
    return {"model_list": entries, "router_settings": settings}


def floor_streamer(
    session: aiohttp.ClientSession, provider: str, sim_url: str, *, rich: bool = False
) -> Streamer:
    """The floor for `provider`: the request by hand, one decode per event, its text (and, in
    a rich run on OpenAI's format, its reasoning and tool-call pieces)."""
    if provider in ("openai", "azure"):
        return _openai_floor(session, provider, sim_url, rich=rich)
    if provider == "gemini":
        return _gemini_floor(session, sim_url)
    if provider == "bedrock":
        return _bedrock_floor(session, sim_url)
    raise ValueError(f"unknown provider {provider!r}")


def _openai_floor(
    session: aiohttp.ClientSession, provider: str, sim_url: str, *, rich: bool
) -> Streamer:
    if provider == "azure":
        url = (
            f"{sim_url}/openai/deployments/{MODEL}/chat/completions?api-version={AZURE_API_VERSION}"
        )
        headers = {"api-key": API_KEY}
    else:
        url, headers = f"{sim_url}/v1/chat/completions", {"Authorization": f"Bearer {API_KEY}"}

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **({"tools": TOOLS} if rich else {}),
        }
        parts: list[str] = []
        async with session.post(url, json=body, headers=headers) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = json.loads(line[6:])["choices"]
                if not choices:
                    continue
                delta = choices[0]["delta"]
                if text := delta.get("content"):
                    parts.append(text)
                    counter[0] += 1
                elif delta.get("reasoning_content") or delta.get("tool_calls"):
                    counter[0] += 1
        counter[1] += len("".join(parts))

    return stream


def _gemini_floor(session: aiohttp.ClientSession, sim_url: str) -> Streamer:
    url = f"{sim_url}/models/{MODEL}:streamGenerateContent?alt=sse"
    headers = {"x-goog-api-key": API_KEY}

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        contents = [{"role": "user", "parts": [{"text": m["content"]}]} for m in messages]
        parts: list[str] = []
        async with session.post(url, json={"contents": contents}, headers=headers) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                candidates = json.loads(line[6:]).get("candidates")
                if candidates:
                    for part in candidates[0].get("content", {}).get("parts", ()):
                        if text := part.get("text"):
                            parts.append(text)
                            counter[0] += 1
        counter[1] += len("".join(parts))

    return stream


def _bedrock_floor(session: aiohttp.ClientSession, sim_url: str) -> Streamer:
    """Unsigned (the simulator checks no signature unless told to): the framing is the cost."""
    url = f"{sim_url}/model/{MODEL}/converse-stream"
    prelude = struct.Struct(">III")

    async def stream(messages: list[dict[str, str]], counter: list[int]) -> None:
        body = {
            "messages": [{"role": "user", "content": [{"text": m["content"]}]} for m in messages]
        }
        parts: list[str] = []
        buffer = b""
        async with session.post(url, json=body) as resp:
            resp.raise_for_status()
            async for piece in resp.content.iter_any():
                buffer += piece
                while len(buffer) >= 12:
                    total, headers_len, crc = prelude.unpack_from(buffer)
                    if len(buffer) < total:
                        break
                    frame, buffer = buffer[:total], buffer[total:]
                    if zlib.crc32(frame[:8]) != crc or zlib.crc32(frame[:-4]) != int.from_bytes(
                        frame[-4:], "big"
                    ):
                        raise ValueError("bad frame")
                    if b"contentBlockDelta" in frame[12 : 12 + headers_len]:
                        delta = json.loads(frame[12 + headers_len : -4])["delta"]
                        if text := delta.get("text"):
                            parts.append(text)
                            counter[0] += 1
        counter[1] += len("".join(parts))

    return stream
