"""The models file (LiteLLM's own `model_list` format), its validation, and model resolution."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litellm
import yaml
from litellm.utils import calculate_max_parallel_requests

from worker.errors import UnknownModel
from worker.jobs import JobRequest
from worker.llm import litellm_setup  # noqa: F401 (LiteLLM's settings before any call)
from worker.llm.target import Target

ENV_PREFIX = "os.environ/"
FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token")
_LIMIT_KEYS = ("max_parallel_requests", "rpm", "tpm")
_TIMEOUT_KEYS = ("timeout", "stream_timeout")


class ModelsFileError(Exception):
    """The models file is missing or malformed; the message says where."""


def env_reference(value: object) -> str | None:
    """NAME, for a setting written `os.environ/NAME`; None for any other value."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return value.removeprefix(ENV_PREFIX)
    return None


def provider_of(model: str) -> str | None:
    """The LiteLLM provider of a model string, or None where LiteLLM knows none."""
    with contextlib.suppress(Exception):
        return str(litellm.get_llm_provider(model)[1])
    return None


@dataclass(frozen=True)
class ModelCatalog:
    """The parsed, validated models file."""

    model_list: list[dict[str, Any]]
    router_settings: dict[str, Any]
    litellm_settings: dict[str, Any]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(entry["model_name"] for entry in self.model_list)

    @property
    def with_fallbacks(self) -> frozenset[str]:
        """Model names that a fallback rule mentions, as primary or as fallback."""
        return frozenset(
            name
            for key in FALLBACK_KEYS
            for rule in self.router_settings.get(key) or []
            for name in rule
        )

    def deployments(self, model_name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.model_list if entry["model_name"] == model_name]

    def entry(self, model_id: str | None) -> dict[str, Any] | None:
        return next((e for e in self.model_list if e["model_info"]["id"] == model_id), None)

    def deployment_model(self, target: Target) -> str:
        """The LiteLLM model string a target calls first."""
        if target.routed:
            for entry in self.deployments(target.model):
                return str(entry["litellm_params"]["model"])
        return target.model

    def timeouts(self, target: Target) -> tuple[float | None, float | None]:
        """The target's own `timeout` (the whole stream) and `stream_timeout` (the first
        token and each silence), LiteLLM's keys, where its deployments set them: the longest
        of them, since the Router may pick any."""
        entries = self.deployments(target.model) if target.routed else []
        return (
            _longest(entry["litellm_params"].get("timeout") for entry in entries),
            _longest(entry["litellm_params"].get("stream_timeout") for entry in entries),
        )

    def referenced_variables(self) -> Iterator[tuple[str, str, str]]:
        """(model_name, setting, NAME) for every `os.environ/NAME` setting."""
        for entry in self.model_list:
            for key, value in entry["litellm_params"].items():
                name = env_reference(value)
                if name is not None:
                    yield entry["model_name"], key, name

    def unset_variables(self) -> list[tuple[str, str, str]]:
        """(model_name, setting, variable) for each `os.environ/NAME` that is not set.

        A warning, not an error: one example file serves several deployments, and a model
        whose key is missing fails its jobs with `auth` without stopping the others.
        """
        return [ref for ref in self.referenced_variables() if not os.environ.get(ref[2])]

    def parallel_limit(self, model_name: str) -> int | None:
        """How many streams a model name may run at once: the sum of its deployments' limits,
        computed as LiteLLM's Router computes them; None when one of them has no limit."""
        default = self.router_settings.get("default_max_parallel_requests")
        total = 0
        for entry in self.deployments(model_name):
            params = entry["litellm_params"]
            limit = calculate_max_parallel_requests(
                max_parallel_requests=params.get("max_parallel_requests"),
                rpm=params.get("rpm"),
                tpm=params.get("tpm"),
                default_max_parallel_requests=default,
            )
            if not limit:
                return None
            total += int(limit)
        return total or None

    def resolve(self, request: JobRequest, *, allow_unlisted: bool) -> Target:
        """A models-file name first; a LiteLLM string only where the operator allows it."""
        if request.model in self.names:
            return Target(model=request.model, routed=True)
        candidate = request.fallback_model or request.model
        if not allow_unlisted:
            raise UnknownModel(f"model '{request.model}' is not in the models file")
        if provider_of(candidate) is None:
            raise UnknownModel(f"model '{candidate}' names no provider LiteLLM knows")
        return Target(model=candidate, routed=False)

    @classmethod
    def load(cls, path: Path) -> ModelCatalog:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ModelsFileError(f"cannot read models file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ModelsFileError(f"models file {path} is not valid YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ModelsFileError(f"models file {path}: expected a mapping with `model_list`")
        model_list = document.get("model_list") or []
        if not isinstance(model_list, list):
            raise ModelsFileError(f"models file {path}: `model_list` must be a list")
        for index, entry in enumerate(model_list):
            _check_entry(path, index, entry)
        catalog = cls(
            model_list=[_with_id(index, entry) for index, entry in enumerate(model_list)],
            router_settings=_mapping(path, document, "router_settings"),
            litellm_settings=_mapping(path, document, "litellm_settings"),
        )
        _check_fallbacks(path, catalog)
        return catalog


def _longest(values: Iterator[object]) -> float | None:
    seconds = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(seconds) if seconds else None


def _check_entry(path: Path, index: int, entry: object) -> None:
    where = f"models file {path}: model_list[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
        raise ModelsFileError(f"{where} needs a string `model_name`")
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ModelsFileError(f"{where} needs `litellm_params.model`")
    where = f"{where} ({entry['model_name']})"
    try:
        litellm.get_llm_provider(
            params["model"], custom_llm_provider=params.get("custom_llm_provider")
        )
    except Exception:  # noqa: BLE001 (LiteLLM raises several types for an unknown provider)
        raise ModelsFileError(
            f"{where}: LiteLLM knows no provider for model '{params['model']}'"
            " (prefix it, e.g. openai/, gemini/, bedrock/, azure/)"
        ) from None
    for key in _LIMIT_KEYS:
        value = params.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ModelsFileError(f"{where}: litellm_params.{key} must be a positive integer")
    for key in _TIMEOUT_KEYS:
        value = params.get(key)
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            raise ModelsFileError(f"{where}: litellm_params.{key} must be a number of seconds > 0")
    info = entry.get("model_info", {})
    if not isinstance(info, dict):
        raise ModelsFileError(f"{where}: `model_info` must be a mapping")
    for key in PRICE_KEYS:
        value = info.get(key)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ModelsFileError(f"{where}: model_info.{key} must be a number >= 0")


def _with_id(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with a `model_info.id`: LiteLLM tags each chunk with it, so the worker knows
    which deployment answered (after a fallback too)."""
    info = dict(entry.get("model_info") or {})
    info.setdefault("id", f"{entry['model_name']}#{index}")
    return {**entry, "model_info": info}


def _check_fallbacks(path: Path, catalog: ModelCatalog) -> None:
    names = catalog.names
    for key in FALLBACK_KEYS:
        rules = catalog.router_settings.get(key)
        if rules is None:
            continue
        where = f"models file {path}: router_settings.{key}"
        if not isinstance(rules, list):
            raise ModelsFileError(f"{where} must be a list like [{{primary: [fallback, ...]}}]")
        for rule in rules:
            if not isinstance(rule, dict) or len(rule) != 1:
                raise ModelsFileError(f"{where}: each item must map one model_name to a list")
            ((primary, targets),) = rule.items()
            if not isinstance(targets, list):
                raise ModelsFileError(f"{where}: '{primary}' must map to a list of model names")
            unknown = [name for name in (primary, *targets) if name not in names]
            if unknown:
                raise ModelsFileError(f"{where} names models not in model_list: {unknown}")


def _mapping(path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key) or {}
    if not isinstance(value, dict):
        raise ModelsFileError(f"models file {path}: `{key}` must be a mapping")
    return value
