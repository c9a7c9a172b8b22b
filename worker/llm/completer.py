"""The one object the job runner talks to: resolve a model, wait for its slot, stream."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import litellm
import structlog
from litellm.router import Router

from worker.jobs import JobRequest, Usage
from worker.llm.catalog import ModelCatalog, ModelsFileError, provider_of
from worker.llm.errors import ErrorMapper, Redactor
from worker.llm.events import Answered, StreamEvent
from worker.llm.lean import LeanStreams, lean_models
from worker.llm.limits import ParallelLimits
from worker.llm.media import MediaPolicy, providers_for
from worker.llm.options import keep_supported
from worker.llm.pricing import Pricing
from worker.llm.routed import RoutedStreams
from worker.llm.target import Target
from worker.messages import MediaUrl

log = structlog.get_logger(__name__)
# The request whose dropped options were logged, in this job's task: once per job, not per
# retry or restart.
_dropped_logged: contextvars.ContextVar[int] = contextvars.ContextVar("dropped_logged", default=0)


class Completer:
    """Puts the LLM edge's parts together for the models file; owns the HTTP sessions.

    Every stream yields `Routed`, the answer's deltas, then `Answered` (worker/llm/events.py);
    a stream that fails raises a JobError (worker/errors.py), including one that ends without
    a finish reason. Each model name streams on the lean path or through LiteLLM's Router
    wrapper, decided at start and logged once (`model_path`).
    """

    def __init__(
        self, catalog: ModelCatalog, *, allow_unlisted: bool, media_url_hosts: Iterable[str] = ()
    ) -> None:
        self._catalog = catalog
        self._allow_unlisted = allow_unlisted
        self._media = MediaPolicy(media_url_hosts)
        for key, value in catalog.litellm_settings.items():
            setattr(litellm, key, value)
        self._pricing = Pricing(catalog)  # before the Router: see Pricing
        self._errors = ErrorMapper(Redactor.for_models(catalog.model_list))
        router = _router(catalog)
        self._routed = RoutedStreams(catalog, router, self._errors)
        deployments, paths = lean_models(catalog)
        for name, reason in paths.items():
            log.info("model_path", model=name, path="router" if reason else "lean", reason=reason)
        lean_names = frozenset(name for name, reason in paths.items() if not reason)
        self._lean = LeanStreams(catalog, router, self._errors, deployments, lean_names)
        self._limits = ParallelLimits(catalog)
        for model_name, setting, variable in catalog.unset_variables():
            log.warning("model_setting_unset", model=model_name, setting=setting, variable=variable)

    def resolve(self, request: JobRequest) -> Target:
        return self._catalog.resolve(request, allow_unlisted=self._allow_unlisted)

    def permit(self, target: Target) -> contextlib.AbstractAsyncContextManager[None]:
        return self._limits.permit(target)

    def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        """Raises InvalidRequest for a media URL the worker may not have fetched."""
        request = self._supported(target, request)
        fetched = []
        if request.media_urls:  # most jobs name none: no provider lookups for them
            providers = providers_for(self._catalog, target)
            fetched = self._media.fetched(request.media_urls, providers)
        events = self._events(target, request)
        return self._resolved_first(fetched, events) if fetched else events

    def _events(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        """The lean path where it serves the model and takes the job, else LiteLLM's wrapper."""
        if self._lean.serves(target):
            declined = self._lean.declines(target, request)
            if declined is None:
                return self._lean.stream(target, request)
            log.info("lean_declined", reason=declined)
        return self._routed.stream(target, request)

    def _supported(self, target: Target, request: JobRequest) -> JobRequest:
        """The request without the options its model's provider does not take."""
        deployments = [
            e["litellm_params"]["model"] for e in self._catalog.deployments(target.model)
        ]
        kept, dropped = keep_supported(request.options, deployments or [target.model])
        if not dropped:
            return request
        if _dropped_logged.get() != id(request):
            _dropped_logged.set(id(request))
            log.warning("options_dropped", options=list(dropped))
        return dataclasses.replace(request, options=kept)

    async def _resolved_first(
        self, fetched: list[MediaUrl], events: AsyncIterator[StreamEvent]
    ) -> AsyncIterator[StreamEvent]:
        """Only jobs with a listed media host pay for this layer (and the DNS lookup)."""
        try:
            await self._media.check_addresses(fetched)
            async for event in events:
                yield event
        finally:
            if isinstance(events, AsyncGenerator):  # closing it hangs up on the provider
                await events.aclose()

    def count_tokens(self, target: Target, request: JobRequest, answer: str) -> Usage:
        return self._pricing.count_tokens(target, request.messages, answer)

    def cost_usd(
        self, target: Target, usage: Usage, *, answered: Answered | None = None
    ) -> float | None:
        return self._pricing.cost_usd(target, usage, answered=answered)

    def timeouts(self, target: Target) -> tuple[float | None, float | None]:
        """The models file's `timeout` and `stream_timeout` for the target, where set."""
        return self._catalog.timeouts(target)

    def called(self, target: Target) -> tuple[str, str | None]:
        """The LiteLLM model string a target calls first, and its provider."""
        model = self._catalog.deployment_model(target)
        return model, provider_of(model)

    async def aclose(self) -> None:
        await self._lean.aclose()


def _router(catalog: ModelCatalog) -> Router:
    # The worker retries itself (backoff, Retry-After). The Router's cooldown would take a
    # model's only deployment out for seconds after one 429 and fail every job waiting on
    # it; operators with several deployments per model can turn it on in router_settings.
    settings: dict[str, Any] = {
        "num_retries": 0,
        "disable_cooldowns": True,
        **catalog.router_settings,
    }
    try:
        return Router(model_list=catalog.model_list, **settings)
    except Exception as exc:  # noqa: BLE001 (LiteLLM rejects bad settings with any type)
        raise ModelsFileError(f"LiteLLM's Router rejected the models file: {exc}") from None
