"""streaming-worker: runs LLM streaming jobs from SQS and writes growing answers to PostgreSQL."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streaming-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
