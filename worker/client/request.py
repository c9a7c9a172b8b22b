"""`request_data` as the app writes it (contract sections 2 and 8), and the tool definitions
`submit --tools FILE` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# `--tool-choice` words OpenAI takes as they are; any other value names a tool.
TOOL_CHOICE_WORDS = ("auto", "none", "required")


class ToolsFileError(ValueError):
    """A `--tools` file that cannot be sent: the message names the file and what is wrong."""


def build_request(
    *,
    model: str,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | None = None,
    reasoning_effort: str | None = None,
) -> dict[str, Any]:
    """`request_data` for one user prompt, with the options given (None: left out)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if tools:
        options["tools"] = tools
    if tool_choice is not None:
        options["tool_choice"] = _tool_choice(tool_choice)
    if reasoning_effort is not None:
        options["reasoning_effort"] = reasoning_effort
    return {"model": model, "messages": messages, "options": options}


def _tool_choice(value: str) -> str | dict[str, Any]:
    if value in TOOL_CHOICE_WORDS:
        return value
    return {"type": "function", "function": {"name": value}}


def load_tools(path: Path) -> list[dict[str, Any]]:
    """The tools in a JSON file: OpenAI's `tools` list, one tool of it, or one bare function
    (`{"name", "parameters"}`), always returned as the list `options.tools` takes."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ToolsFileError(f"--tools {path}: cannot read it: {error.strerror}") from None
    try:
        loaded = json.loads(text)
    except ValueError as error:
        raise ToolsFileError(f"--tools {path}: not JSON: {error}") from None
    tools = loaded if isinstance(loaded, list) else [loaded]
    if not tools:
        raise ToolsFileError(f"--tools {path}: the list is empty")
    return [_tool(tool, f"--tools {path}: tool {index}") for index, tool in enumerate(tools)]


def _tool(tool: object, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ToolsFileError(f"{where}: expected an object, got {type(tool).__name__}")
    if "type" not in tool and "name" in tool:
        tool = {"type": "function", "function": tool}  # a bare function definition
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise ToolsFileError(f'{where}: expected {{"type": "function", "function": {{...}}}}')
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise ToolsFileError(f"{where}: function.name must be a non-empty string")
    if "parameters" in function and not isinstance(function["parameters"], dict):
        raise ToolsFileError(f"{where}: function.parameters must be a JSON schema object")
    return tool
