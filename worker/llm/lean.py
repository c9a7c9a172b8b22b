"""The lean path: LiteLLM's Router routes, the worker reads the bytes, the Router hears how it went.

For a models-file name on this path, each call asks the Router to pick a deployment
(`Router.select`: its strategy, weights, cooldowns), streams it with that wire format's reader,
and reports a failure back with `RouterHealth.record_failure` (the Router's own per-minute
failure count and `set_cooldown_deployments`, so cooldowns are the Router's decision; for a
provider's `Retry-After` the same two steps with that time, as its failure callback does). A
failure before the first token moves to the model's fallbacks as the Router's fallback walk
picks them: `context_window_fallbacks` for a context-window error, `content_policy_fallbacks`
for a content-policy one, else `fallbacks` (with its `*` entry), at most `max_fallbacks`. Text
already streamed is never continued elsewhere: a later failure is the job's to retry.

`lean_models` decides per model name at start: the lean path where every deployment of the
model and of every fallback it may reach has a lean reader and the router settings are ones
this path applies; otherwise LiteLLM's Router and its stream wrapper (`routed`), said once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import litellm
import structlog
from litellm.router import Router
from litellm.router_api import RoutingContext, fallback_chain
from litellm.router_utils.cooldown_handlers import set_cooldown_deployments
from litellm.router_utils.router_callbacks.track_deployment_metrics import (
    increment_deployment_failures_for_current_minute,
)
from litellm.types.router import RouterRateLimitError
from litellm.utils import _get_retry_after_from_exception_header

from worker.errors import (
    ContentFiltered,
    ContextWindowExceeded,
    JobError,
    ProviderUnavailable,
    StreamBroken,
)
from worker.jobs import JobRequest
from worker.llm.catalog import FALLBACK_KEYS, ModelCatalog
from worker.llm.errors import ErrorMapper, provider_exception
from worker.llm.events import Answered, Routed, StreamEvent
from worker.llm.lean_requests import LeanDeployment, lean_deployment
from worker.llm.openai_sse import ProviderReported
from worker.llm.target import Target
from worker.llm.transport import HTTPStatus, new_session

log = structlog.get_logger(__name__)

# Router settings this path applies as the Router would (the Router reads them itself through
# `select` and `record_failure`); any other (usage-based strategies, pre-call checks, Redis,
# routing groups, ...) needs the Router to run the call, so such models stay on its path.
_ROUTER_SETTINGS = frozenset(
    {
        *FALLBACK_KEYS,
        "num_retries",
        "disable_cooldowns",
        "cooldown_time",
        "allowed_fails",
        "allowed_fails_policy",
        "max_fallbacks",
        "routing_strategy",
        "retry_after",
        "timeout",
        "stream_timeout",
        "default_max_parallel_requests",
    }
)
_DEFAULT_MAX_FALLBACKS = 5
# What reading a stream may raise besides a JobError the reader names itself.
_READ_ERRORS = (HTTPStatus, ProviderReported, StreamBroken, ConnectionError, ValueError)


class _AttemptFailed(Exception):
    """One deployment's call failed: the job's error, and the Router's view of it."""

    def __init__(
        self, error: JobError, cause: Exception, status: int, retry_after_s: float | None = None
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.cause = cause
        self.status = status
        self.retry_after_s = retry_after_s  # the Router cools down for a Retry-After, if any


def lean_models(catalog: ModelCatalog) -> tuple[dict[str, LeanDeployment], dict[str, str]]:
    """The lean deployments by models-file id, and for each model name why it is not on the
    lean path ("" where it is)."""
    deployments: dict[str, LeanDeployment] = {}
    reasons: dict[str, str] = {}
    for entry in catalog.model_list:
        made = lean_deployment(entry)
        if isinstance(made, str):
            reasons.setdefault(entry["model_name"], made)
        else:
            deployments[made.model_id] = made
    router_reason = _router_reason(catalog.router_settings)
    paths: dict[str, str] = {}
    for name in sorted(catalog.names):
        blocked = router_reason or reasons.get(name)
        if blocked is None:
            blocked = next(
                (f"fallback {other}: {reasons[other]}" for other in _reachable(catalog, name)
                 if other in reasons),
                None,
            )  # fmt: skip
        paths[name] = blocked or ""
    return deployments, paths


def _router_reason(settings: dict[str, Any]) -> str | None:
    extra = set(settings) - _ROUTER_SETTINGS
    if extra:
        return f"router settings only the Router applies: {', '.join(sorted(extra))}"
    strategy = settings.get("routing_strategy", "simple-shuffle")
    if strategy != "simple-shuffle":
        return f"routing strategy {strategy} counts usage the Router must see"
    return None


def _reachable(catalog: ModelCatalog, name: str) -> list[str]:
    """Every model name a fallback rule may lead to from `name`, transitively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop()
        for key in FALLBACK_KEYS:
            for rule in catalog.router_settings.get(key) or []:
                for primary, targets in rule.items():
                    if primary in (current, "*"):
                        todo += [t for t in targets if t not in seen and t != name]
                        seen += [t for t in targets if t not in seen and t != name]
    return seen


class LeanStreams:
    """Streams models-file names whose every deployment has a lean reader."""

    def __init__(
        self,
        catalog: ModelCatalog,
        router: Router,
        errors: ErrorMapper,
        deployments: dict[str, LeanDeployment],
        names: frozenset[str],
    ) -> None:
        self._catalog = catalog
        self._router = router
        self._errors = errors
        self._deployments = deployments
        self._names = names
        # The deployments a job for each name may reach: its own and its fallbacks'.
        self._reach = {
            name: [
                self._deployments[entry["model_info"]["id"]]
                for group in (name, *_reachable(catalog, name))
                for entry in catalog.deployments(group)
            ]
            for name in names
        }
        self._session: Any = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def serves(self, target: Target) -> bool:
        return target.routed and target.model in self._names

    def declines(self, target: Target, request: JobRequest) -> str | None:
        """None when this path takes a job of a model it serves, else why LiteLLM's wrapper
        must (a part LiteLLM resolves with network calls of its own, say)."""
        for deployment in self._reach[target.model]:
            reason = deployment.declines(request)
            if reason is not None:
                return reason
        return None

    async def stream(self, target: Target, request: JobRequest) -> AsyncIterator[StreamEvent]:
        groups = [target.model]
        failure: _AttemptFailed | None = None
        for group in _growing(groups):
            try:
                deployment = await self._pick(group, request)
                events = await self._open(deployment, request)
            except _AttemptFailed as refused:  # no deployment to pick, or none was called
                failed = refused
            else:
                started = False  # one layer, not two, between the reader and the runner
                try:
                    async for event in events:
                        if not started:
                            started = True
                            yield Routed(deployment.provider)
                        if type(event) is Answered:
                            event = dataclasses.replace(  # noqa: PLW2901 (named, then passed on)
                                event,
                                deployment=deployment.deployment,
                                model_id=deployment.model_id,
                            )
                        yield event
                except _READ_ERRORS as error:
                    failed = self._failure(deployment, error)
                    self._report(deployment, failed)
                    if started:
                        raise failed.error from None
                else:
                    return
                finally:
                    await events.aclose()  # type: ignore[attr-defined]
            if failure is None:  # the first failure's kind picks the fallbacks, as the Router's
                groups += self._fallbacks(target.model, failed.error)
            failure = failed
        assert failure is not None, "a model has at least one group to try"
        raise failure.error

    def _fallbacks(self, model: str, error: JobError) -> list[str]:
        settings = self._catalog.router_settings
        limit = int(settings.get("max_fallbacks") or _DEFAULT_MAX_FALLBACKS)
        return _fallbacks(settings, model, error)[:limit]

    async def _pick(self, group: str, request: JobRequest) -> LeanDeployment:
        """The Router's choice among the group's deployments (its strategy, its cooldowns)."""
        try:
            entry = await self._router.select(group, {}, messages=request.messages)
        except RouterRateLimitError as exc:  # every deployment of the group cooling down
            raise _AttemptFailed(self._errors.map(exc), exc, 429) from None
        return self._deployments[entry["model_info"]["id"]]

    async def _open(
        self, deployment: LeanDeployment, request: JobRequest
    ) -> AsyncIterator[StreamEvent]:
        """The deployment's events for the job: the request built, not yet sent."""
        try:
            prepared = await deployment.prepare(request)
        except JobError:
            raise
        except Exception as exc:  # noqa: BLE001 (LiteLLM rejects parameters with several types)
            raise self._errors.map(exc, provider=deployment.provider) from None
        if self._session is None:
            self._session = new_session()
        return deployment.events(self._session, prepared)

    def _failure(self, deployment: LeanDeployment, error: Exception) -> _AttemptFailed:
        """What went wrong with a call, for the job and for the Router."""
        if isinstance(error, HTTPStatus):
            mapped = self._errors.http(
                error.status, error.body, error.headers,
                config=deployment.config, provider=deployment.provider,
            )  # fmt: skip
            cause = provider_exception(
                error.status, error.body, error.headers,
                config=deployment.config, provider=deployment.provider,
            )  # fmt: skip
            seconds = _get_retry_after_from_exception_header(httpx.Headers(error.headers))
            retry_after_s = float(seconds) if isinstance(seconds, int) and seconds >= 0 else None
            return _AttemptFailed(mapped, cause, error.status, retry_after_s)
        if isinstance(error, ProviderReported):
            return _broken(self._errors.in_stream(error.error), deployment)
        if isinstance(error, StreamBroken):
            return _broken(error, deployment)
        if isinstance(error, ConnectionError):
            return _broken(ProviderUnavailable(str(error)), deployment)
        # A payload that is not JSON.
        return _broken(StreamBroken(f"the provider sent an unreadable chunk: {error}"), deployment)

    def _report(self, deployment: LeanDeployment, failed: _AttemptFailed) -> None:
        """Tell the Router, as its failure callback would: it counts the failure and decides
        whether the deployment cools down."""
        try:
            if failed.retry_after_s is None:
                cooled = self._router.health().record_failure(
                    deployment.model_id, failed.cause, failed.status
                )
            else:  # the same two steps, for the provider's Retry-After rather than cooldown_time
                context = RoutingContext(self._router)
                increment_deployment_failures_for_current_minute(context, deployment.model_id)
                cooled = set_cooldown_deployments(
                    context, original_exception=failed.cause, exception_status=failed.status,
                    deployment=deployment.model_id, time_to_cooldown=failed.retry_after_s,
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 (bookkeeping must never fail a job)
            log.warning("router_report_failed", error=type(exc).__name__)
            return
        if cooled:
            log.info("deployment_cooled_down", deployment=deployment.model_id, status=failed.status)


def _growing(items: list[str]) -> Iterator[str]:
    """Each item of a list that may grow while it is walked."""
    index = 0
    while index < len(items):
        yield items[index]
        index += 1


def _broken(error: JobError, deployment: LeanDeployment) -> _AttemptFailed:
    """A stream that broke, as LiteLLM reports one (a 503 `ServiceUnavailableError`)."""
    cause = litellm.ServiceUnavailableError(
        message=error.message, llm_provider=deployment.provider, model=deployment.model
    )
    return _AttemptFailed(error, cause, 503)


def _fallbacks(settings: dict[str, Any], model: str, error: JobError) -> list[str]:
    """The Router's fallback choice: a context-window list that names the model wins for a
    context-window error; a content-policy list decides alone for a content-policy error; else
    the generic list, its `*` entry for a model it does not name."""
    if isinstance(error, ContextWindowExceeded) and settings.get("context_window_fallbacks"):
        found, _ = fallback_chain(settings["context_window_fallbacks"], model)
        if found:
            return list(found)
    if isinstance(error, ContentFiltered) and settings.get("content_policy_fallbacks") is not None:
        found, _ = fallback_chain(settings["content_policy_fallbacks"], model)
        return list(found or [])
    fallbacks = settings.get("fallbacks")
    if not fallbacks:
        return []
    found, generic = fallback_chain(fallbacks, model)
    if found is None and generic is not None:
        found = fallbacks[generic]["*"]
    return [name for name in found or [] if name != model]
