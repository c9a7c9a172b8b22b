"""streaming-worker: runs LLM streaming jobs from SQS and writes growing answers to PostgreSQL."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# Before anything imports LiteLLM (worker/llm): it would otherwise fetch its price table
# over the network at import. The package root is the one place that runs first.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    __version__ = version("streaming-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
