"""Fakes of the LLM providers' streaming APIs, one module per wire format, one directive language.

OpenAI and Azure OpenAI (`simulator.openai`), Gemini (`simulator.gemini`) and Bedrock
ConverseStream (`simulator.bedrock`) are served by one app (`simulator.server`) on one port,
with deterministic answers (`simulator.answers`) and faults scripted by `[[sim ...]]`
directives (`simulator.script`); rich answers (reasoning, tool calls, refusals, filter
endings, usage details) are scripted by `simulator.rich`. Shared by the tests, the benchmark,
the demo and the compose stack; `python -m simulator` or `streaming-worker simulate-llm` runs it.
"""

from __future__ import annotations

from simulator.answers import ToolCall, answer_text, answer_tokens, count_prompt_tokens
from simulator.cli import main
from simulator.config import SimulatorConfig
from simulator.log import Received, RequestLog
from simulator.rich import (
    Tool,
    expected_reasoning,
    expected_tool_calls,
    redacted_data,
    thought_signature,
)
from simulator.server import Simulator, build_app, request_log

__all__ = [
    "Received",
    "RequestLog",
    "Simulator",
    "SimulatorConfig",
    "Tool",
    "ToolCall",
    "answer_text",
    "answer_tokens",
    "build_app",
    "count_prompt_tokens",
    "expected_reasoning",
    "expected_tool_calls",
    "main",
    "redacted_data",
    "request_log",
    "thought_signature",
]
