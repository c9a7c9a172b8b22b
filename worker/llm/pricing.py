"""Token counts and cost, by LiteLLM's counters and price table or the models file's prices."""

from __future__ import annotations

from typing import Any

import litellm

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
        """`usage`'s price. In order: LiteLLM's own figure for the stream that answered, the
        answering deployment's `model_info` prices, LiteLLM's price table for its model
        string. Without an answer (a job that failed or was cancelled), the target's first
        deployment's."""
        if answered is not None and answered.cost_usd is not None:
            return answered.cost_usd
        model_id = None if answered is None else answered.model_id
        if answered is None and target.routed:
            model_id = self._catalog.deployments(target.model)[0]["model_info"]["id"]
        entry = self._catalog.entry(model_id) if target.routed else None
        info: dict[str, Any] = {} if entry is None else entry["model_info"]
        if all(info.get(key) is not None for key in PRICE_KEYS):
            prompt = usage.prompt_tokens * float(info["input_cost_per_token"])
            completion = usage.completion_tokens * float(info["output_cost_per_token"])
            return round(prompt + completion, 10)
        model = self._catalog.deployment_model(target) if answered is None else answered.deployment
        priced = self._priced[model] if model in self._priced else _in_price_table(model)
        if not priced:
            return None
        try:
            prompt, completion = litellm.cost_per_token(
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        except Exception:  # noqa: BLE001 (LiteLLM raises for models it has no price for)
            return None
        return round(float(prompt) + float(completion), 10)

    def count_tokens(self, target: Target, messages: list[dict[str, Any]], answer: str) -> Usage:
        """An estimate for a provider that reported no usage (or a stream cut short)."""
        model = self._catalog.deployment_model(target)
        try:
            prompt = litellm.token_counter(model=model, messages=messages)
            completion = litellm.token_counter(model=model, text=answer)
        except Exception:  # noqa: BLE001 (a count is an estimate; never fail a job over it)
            return Usage(prompt_tokens=0, completion_tokens=len(answer.split()))
        return Usage(prompt_tokens=int(prompt), completion_tokens=int(completion))


def _in_price_table(model: str) -> bool:
    try:
        litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 (LiteLLM raises for models it does not know)
        return False
    return True
