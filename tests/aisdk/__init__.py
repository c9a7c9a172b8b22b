"""The Vercel AI SDK itself, run by node, as the judge of message shapes in tests.

`tests/aisdk/package.json` pins one release of each major the worker accepts (npm aliases
`ai5`, `ai6`, `ai7`); `aisdk.mjs` runs their `convertToModelMessages`, `validateUIMessages`
and `modelMessageSchema`. The first use installs them (`npm ci`, from the committed
lockfile) into `tests/aisdk/node_modules`; a machine without node fails the tests that need
it instead of skipping them.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support import one_at_a_time

SDK_DIR = Path(__file__).resolve().parent
ALIASES = ("ai5", "ai6", "ai7")
_INSTALLED_LOCK = SDK_DIR / "node_modules" / ".package-lock.json"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"`{name}` is not on PATH: the AI SDK tests need node >= 20 and npm"
            " (CI: install them, then `npm ci --prefix tests/aisdk`)"
        )
    return path


def ensure_installed() -> None:
    """`npm ci` once, and again whenever the lockfile changed since; one pytest-xdist process
    at a time (the others wait, then find it done)."""
    lock = SDK_DIR / "package-lock.json"
    with one_at_a_time("npm-ci"):
        if _INSTALLED_LOCK.exists() and _INSTALLED_LOCK.stat().st_mtime >= lock.stat().st_mtime:
            return
        subprocess.run(
            [_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SDK_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )


@functools.cache
def _run_cached(payload: str) -> str:
    ensure_installed()
    done = subprocess.run(
        [_tool("node"), str(SDK_DIR / "aisdk.mjs")],
        input=payload,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"aisdk.mjs failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def run_sdk(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each request's answer per SDK alias, and the SDK versions that answered."""
    answers = json.loads(_run_cached(json.dumps(requests, sort_keys=True)))
    return answers[:-1], answers[-1]["versions"]


def sdk_versions() -> dict[str, str]:
    return run_sdk([])[1]


def convert_to_model_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """{alias: model messages} from each SDK's `convertToModelMessages`; raises if one fails."""
    (answer,), _ = run_sdk([{"op": "convert", "messages": messages}])
    failed = {alias: result["error"] for alias, result in answer.items() if not result["ok"]}
    if failed:
        raise AssertionError(f"convertToModelMessages failed: {failed}")
    return {alias: result["messages"] for alias, result in answer.items()}


def ui_message_errors(messages: list[dict[str, Any]]) -> dict[str, str]:
    """{alias: error} for each SDK whose `validateUIMessages` rejects the messages."""
    (answer,), _ = run_sdk([{"op": "validate-ui", "messages": messages}])
    return {alias: result["error"] for alias, result in answer.items() if not result["ok"]}


def model_message_errors(messages: list[dict[str, Any]]) -> dict[str, str]:
    """{alias: error} for each SDK whose `modelMessageSchema` rejects one of the messages."""
    (answer,), _ = run_sdk([{"op": "validate-model", "messages": messages}])
    return {alias: result["error"] for alias, result in answer.items() if not result["ok"]}


def validate_ui_parts(parts: list[dict[str, Any]], *, role: str = "assistant") -> None:
    """Assert that every AI SDK version takes `parts` as one UI message's parts: what the
    worker writes to `response_data.parts` must pass the SDK's own `validateUIMessages`."""
    errors = ui_message_errors([{"id": "m1", "role": role, "parts": parts}])
    if errors:
        raise AssertionError(f"validateUIMessages rejected the parts: {errors}")
