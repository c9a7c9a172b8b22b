"""How the app-side CLI shows a job's row: `status` (text or JSON), the closing line of
`--follow`, and the tool calls a job ended with (contract sections 3 and 8)."""

from __future__ import annotations

from typing import Any

TIMES = ("created_at", "started_at", "updated_at", "completed_at")


def public(view: dict[str, Any]) -> dict[str, Any]:
    """The view as JSON: the answer's length rather than the answer (it can be long; the
    reasoning is shown whole), times in ISO 8601."""
    out = {key: value for key, value in view.items() if key != "partial_content"}
    out["id"] = str(view["id"])
    out["content_chars"] = len(view["partial_content"])
    out["reasoning_chars"] = len(view["reasoning_content"])
    for key in TIMES:
        out[key] = None if view[key] is None else view[key].isoformat()
    return out


def describe(view: dict[str, Any]) -> str:
    """`status`: one `name value` line per field."""
    error = (
        f"{view['error_code']}: {view['error_message']}"
        if view["error_code"] or view["error_message"]
        else "-"
    )
    response = view["response_data"] or {}
    answered_by = " ".join(
        str(part) for part in (response.get("model"), response.get("provider")) if part
    )
    calls = tool_calls(response)
    lines = [
        ("job", str(view["id"])),
        ("status", view["status"]),
        ("model", view["model"] or "-"),
        ("answered by", answered_by or "-"),
        ("attempts", str(view["attempts"])),
        ("finish", response.get("finish_reason") or "-"),
        ("error", error),
        ("usage", usage_text(response)),
        ("text", f"{len(view['partial_content'])} characters"),
        ("reasoning", f"{len(view['reasoning_content'])} characters"),
        ("tool calls", str(len(calls)) if calls else "-"),
        *((f"tool call {n}", call) for n, call in enumerate(calls, 1)),
        ("created", _time(view["created_at"])),
        ("started", _time(view["started_at"])),
        ("updated", _time(view["updated_at"])),
        ("ended", _time(view["completed_at"])),
    ]
    return "\n".join(f"{name:<12} {value}" for name, value in lines)


def one_line(view: dict[str, Any]) -> str:
    """`--follow`'s closing line on stderr: status, finish reason, attempts, error, usage."""
    response = view["response_data"] or {}
    parts = [str(view["status"])]
    if response.get("finish_reason") not in (None, "stop"):
        parts.append(f"finish {response['finish_reason']}")
    parts.append(f"attempts {view['attempts']}")
    if view["error_code"]:
        parts.append(f"{view['error_code']}: {view['error_message']}")
    parts.append(usage_text(response))
    return "streaming-worker: " + ", ".join(part for part in parts if part != "-")


def tool_calls(response: dict[str, Any]) -> list[str]:
    """Each tool call of `response_data.message` as `name arguments (id)`, arguments as the
    model wrote them."""
    message = response.get("message") or {}
    shown = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        shown.append(f"{function.get('name')} {function.get('arguments')} ({call.get('id')})")
    return shown


def usage_text(response: dict[str, Any]) -> str:
    usage = response.get("usage") or {}
    if not usage:
        return "-"
    prompt = f"{usage.get('prompt_tokens', 0)} prompt"
    if usage.get("cached_tokens"):
        prompt += f" ({usage['cached_tokens']} cached)"
    completion = f"{usage.get('completion_tokens', 0)} completion"
    if usage.get("reasoning_tokens"):
        completion += f" ({usage['reasoning_tokens']} reasoning)"
    text = f"{prompt} + {completion} = {usage.get('total_tokens', 0)} tokens"
    if response.get("cost_usd") is not None:
        text += f", ${response['cost_usd']:.6f}"
    if response.get("ttft_ms") is not None:
        text += f", first token {response['ttft_ms']} ms"
    if response.get("duration_ms") is not None:
        text += f", {response['duration_ms'] / 1000:.1f} s"
    return text


def _time(value: Any) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")
