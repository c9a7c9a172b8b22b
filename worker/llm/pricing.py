"""Token counts and cost, by LiteLLM's counters and price table or the models file's prices."""

from __future__ import annotations

from typing import Any

import litellm
from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper

from worker.jobs import Usage
from worker.llm.catalog import PRICE_KEYS, ModelCatalog
from worker.llm.events import Answered
from worker.llm.target import Target


class Pricing:
    """Prices answers; never raises: an unknown price is None, a failed count an estimate."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog
        # Read before LiteLLM's Router exists: it registers every deployment in the price
        # table, with a price of 0 where it knows none.
        self._priced = {
            model: _in_price_table(model)
            for model in {str(e["litellm_params"]["model"]) for e in catalog.model_list}
        }

    def cost_usd(
        self, target: Target, usage: Usage, *, answered: Answered | None = None
    ) -> float | None:
        """`usage`'s price, cached and reasoning tokens included. In order: LiteLLM's own figure
        for the stream that answered, the answering deployment's `model_info` prices, LiteLLM's
        price table for its model string, then for the model the provider reported (an Azure
        deployment is named by its operator; the model behind it is priced). Without an answer
        (a job that failed or was cancelled), the target's first deployment's."""
        if answered is not None and answered.cost_usd is not None:
            return answered.cost_usd
        model_id = None if answered is None else answered.model_id
        if answered is None and target.routed:
            model_id = self._catalog.deployments(target.model)[0]["model_info"]["id"]
        entry = self._catalog.entry(model_id) if target.routed else None
        info: dict[str, Any] = {} if entry is None else entry["model_info"]
        if all(info.get(key) is not None for key in PRICE_KEYS):
            return _priced_by(info, usage)
        model = self._catalog.deployment_model(target) if answered is None else answered.deployment
        candidates = [model]
        if answered is not None and answered.provider and answered.model:
            candidates.append(f"{answered.provider}/{answered.model}")
        for candidate in candidates:
            if self._priced[candidate] if candidate in self._priced else _in_price_table(candidate):
                return _table_cost(candidate, usage)
        return None

    def count_tokens(self, target: Target, messages: list[dict[str, Any]], answer: str) -> Usage:
        """An estimate for a provider that reported no usage (or a stream cut short)."""
        model = self._catalog.deployment_model(target)
        try:
            prompt = litellm.token_counter(model=model, messages=messages)
            completion = litellm.token_counter(model=model, text=answer)
        except Exception:  # noqa: BLE001 (a count is an estimate; never fail a job over it)
            return Usage(prompt_tokens=0, completion_tokens=len(answer.split()))
        return Usage(prompt_tokens=int(prompt), completion_tokens=int(completion))


def litellm_usage(usage: Usage) -> litellm.Usage:
    """The worker's usage as LiteLLM's, details included: its cost function prices cached
    prompt tokens at their own rate only when it sees them."""
    return litellm.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=usage.cached_tokens)
        if usage.cached_tokens is not None
        else None,
        completion_tokens_details=CompletionTokensDetailsWrapper(
            reasoning_tokens=usage.reasoning_tokens
        )
        if usage.reasoning_tokens is not None
        else None,
    )


def _table_cost(model: str, usage: Usage) -> float | None:
    try:
        prompt, completion = litellm.cost_per_token(model=model, usage_object=litellm_usage(usage))
    except Exception:  # noqa: BLE001 (LiteLLM raises for models it has no price for)
        return None
    return round(float(prompt) + float(completion), 10)


def _priced_by(info: dict[str, Any], usage: Usage) -> float:
    """The models file's own prices; cached prompt tokens at `cache_read_input_token_cost`
    where it gives one (LiteLLM's key), else at the input price."""
    cached = usage.cached_tokens or 0
    cached_price = info.get("cache_read_input_token_cost")
    input_price = float(info["input_cost_per_token"])
    prompt = (usage.prompt_tokens - cached) * input_price
    prompt += cached * (input_price if cached_price is None else float(cached_price))
    completion = usage.completion_tokens * float(info["output_cost_per_token"])
    return round(prompt + completion, 10)


def _in_price_table(model: str) -> bool:
    try:
        litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 (LiteLLM raises for models it does not know)
        return False
    return True
