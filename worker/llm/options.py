"""Which of a job's generation options a model's provider takes (contract 8).

An option the provider does not support is dropped with a warning, never a failed job:
LiteLLM knows per provider and model (`get_supported_openai_params`). Only OpenAI's
parameters are judged; provider-specific ones (`top_k`) are LiteLLM's to pass on as
before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import litellm


@functools.cache
def supported(deployment: str) -> frozenset[str] | None:
    """The OpenAI parameters LiteLLM sends for a LiteLLM model string; None where it cannot
    tell (then nothing is dropped: the provider decides)."""
    try:
        model, provider, _, _ = litellm.get_llm_provider(deployment)
        params = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    except Exception:  # noqa: BLE001 (LiteLLM raises several types for models it does not know)
        return None
    return frozenset(params) if params is not None else None


def keep_supported(
    options: Mapping[str, Any], deployments: Iterable[str]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(the options every deployment takes, the names dropped, sorted)."""
    judged = frozenset(litellm.OPENAI_CHAT_COMPLETION_PARAMS)
    dropped: set[str] = set()
    for deployment in deployments:
        params = supported(deployment)
        if params is not None:
            dropped |= {name for name in options if name in judged and name not in params}
    kept = {name: value for name, value in options.items() if name not in dropped}
    return kept, tuple(sorted(dropped))
