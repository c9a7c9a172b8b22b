"""The LLM edge: the only package that imports LiteLLM.

LiteLLM builds every request, names every error, reports usage and prices it; its Router
serves the models file. The worker owns only the bytes of the streams it reads itself.

- `catalog`: the models file, its validation, and resolving a job's model to a `target`;
- `events`: what a stream yields (who took the call, text, how it ended);
- `errors`: LiteLLM's and the providers' errors as the contract's codes, secrets masked;
- `pricing`: token counts and cost;
- `limits`: per-model parallel-stream slots;
- `lean`: the lean path: the Router picks and hears how each call went, fallbacks walked;
- `lean_requests`: each provider's request as LiteLLM builds it, and which deployments qualify;
- `transport`: the HTTP session, the POST and the SSE framing the readers share;
- `openai_sse`, `gemini_sse`, `bedrock_events`: one lean reader per wire format;
- `routed`: streaming through LiteLLM's Router and its stream wrapper (everything else);
- `options`, `media`: which job options a provider takes, which media URLs may be fetched;
- `completer`: the one object the job runner talks to.

`target` and `events` do not import LiteLLM (its import takes seconds), so the core and its
in-process tests can use them; the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.llm.catalog import ModelCatalog, ModelsFileError
    from worker.llm.completer import Completer
    from worker.llm.litellm_setup import LITELLM_VERSION

_LAZY = {
    "ModelCatalog": "worker.llm.catalog",
    "ModelsFileError": "worker.llm.catalog",
    "Completer": "worker.llm.completer",
    "LITELLM_VERSION": "worker.llm.litellm_setup",
}

__all__ = ["LITELLM_VERSION", "Completer", "ModelCatalog", "ModelsFileError"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'worker.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
