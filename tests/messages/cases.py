"""UI messages of every part type, with the OpenAI messages the worker must make of them.

The AI SDK itself checks each input (`validateUIMessages`) and converts it
(`convertToModelMessages`) in every accepted major: the worker must make the same OpenAI
messages of the SDK's model messages as of the UI messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2O"
    "UAAAAABJRU5ErkJggg=="
)
PDF_BASE64 = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDM+PgplbmRvYmoKJSVFT0YK"
PNG = f"data:image/png;base64,{PNG_BASE64}"
PDF = f"data:application/pdf;base64,{PDF_BASE64}"
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
}


@dataclass(frozen=True)
class Case:
    name: str
    ui: list[dict[str, Any]]
    openai: list[dict[str, Any]]
    aliases: tuple[str, ...] = ("ai5", "ai6", "ai7")


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": list(parts)}


def _assistant(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "a1", "role": "assistant", "parts": list(parts)}


def _weather(**fields: Any) -> dict[str, Any]:
    return {"type": "tool-weather", "toolCallId": "call_1", "input": {"city": "Paris"}, **fields}


CASES = [
    Case(
        "text",
        [_user({"type": "text", "text": "What is "}, {"type": "text", "text": "this?"})],
        [{"role": "user", "content": "What is this?"}],
    ),
    Case(
        "system_text",
        [{"id": "s1", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]}],
        [{"role": "system", "content": "Be brief."}],
    ),
    Case(
        "file_image_data_url",
        [
            _user(
                {"type": "text", "text": "Describe"},
                {"type": "file", "mediaType": "image/png", "url": PNG, "filename": "dot.png"},
            )
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ],
    ),
    Case(
        "file_image_https_url",
        [_user({"type": "file", "mediaType": "image/jpeg", "url": "https://example.com/cat.jpg"})],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ],
            }
        ],
    ),
    Case(
        "file_pdf_data_url",
        [_user({"type": "file", "mediaType": "application/pdf", "url": PDF, "filename": "a.pdf"})],
        [
            {
                "role": "user",
                "content": [{"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}}],
            }
        ],
    ),
    Case(
        "file_pdf_https_url",
        [
            _user(
                {
                    "type": "file",
                    "mediaType": "application/pdf",
                    "url": "https://example.com/a.pdf",
                    "filename": "a.pdf",
                }
            )
        ],
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "file_id": "https://example.com/a.pdf",
                            "format": "application/pdf",
                            "filename": "a.pdf",
                        },
                    }
                ],
            }
        ],
    ),
    Case(
        "file_audio_wav_data_url",
        [
            _user(
                {"type": "file", "mediaType": "audio/wav", "url": "data:audio/wav;base64,UklGRg=="}
            )
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
                ],
            }
        ],
    ),
    Case(
        "assistant_text",
        [_assistant({"type": "text", "text": "Hi."})],
        [{"role": "assistant", "content": "Hi."}],
    ),
    Case(
        "reasoning_plain",
        [_assistant({"type": "reasoning", "text": "Think."}, {"type": "text", "text": "Answer."})],
        [{"role": "assistant", "content": "Answer.", "reasoning_content": "Think."}],
    ),
    Case(
        "reasoning_anthropic_signature",
        [
            _assistant(
                {
                    "type": "reasoning",
                    "text": "Think.",
                    "providerMetadata": {"anthropic": {"signature": "c2ln"}},
                },
                {"type": "text", "text": "Answer."},
            )
        ],
        [
            {
                "role": "assistant",
                "content": "Answer.",
                "reasoning_content": "Think.",
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "Think.", "signature": "c2ln"}
                ],
            }
        ],
    ),
    Case(
        "reasoning_bedrock_redacted",
        [
            _assistant(
                {
                    "type": "reasoning",
                    "text": "",
                    "providerMetadata": {"bedrock": {"redactedData": "ZW5j"}},
                },
                {"type": "text", "text": "Answer."},
            )
        ],
        [
            {
                "role": "assistant",
                "content": "Answer.",
                "reasoning_content": "",
                "thinking_blocks": [{"type": "redacted_thinking", "data": "ZW5j"}],
            }
        ],
    ),
    Case(
        "tool_output_json",
        [_assistant(_weather(state="output-available", output={"temp": 20, "unit": "°C"}))],
        [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":20,"unit":"°C"}'},
        ],
    ),
    Case(
        "tool_output_string",
        [_assistant(_weather(state="output-available", output="sunny"))],
        [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    ),
    Case(
        "tool_output_error",
        [_assistant(_weather(state="output-error", errorText="no such city"))],
        [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "no such city"},
        ],
    ),
    Case(
        "dynamic_tool",
        [
            _assistant(
                {
                    "type": "dynamic-tool",
                    "toolName": "lookup",
                    "toolCallId": "call_9",
                    "state": "output-available",
                    "input": {"q": [1, 2]},
                    "output": [{"hit": True}],
                }
            )
        ],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":[1,2]}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": '[{"hit":true}]'},
        ],
    ),
    Case(
        "multi_step",
        [
            _assistant(
                {"type": "step-start"},
                {"type": "text", "text": "Let me look."},
                _weather(state="output-available", output={"temp": 20}),
                {"type": "step-start"},
                {"type": "text", "text": "20 °C in Paris."},
            )
        ],
        [
            {"role": "assistant", "content": "Let me look.", "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":20}'},
            {"role": "assistant", "content": "20 °C in Paris."},
        ],
    ),
    Case(
        "one_step_text_around_a_call",
        [
            _assistant(
                {"type": "text", "text": "A"},
                _weather(state="output-available", output="sunny"),
                {"type": "text", "text": "B"},
            )
        ],
        [
            {"role": "assistant", "content": "AB", "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    ),
    Case(
        "parallel_calls",
        [
            _assistant(
                {"type": "step-start"},
                _weather(state="output-available", output="sunny"),
                {
                    "type": "tool-weather",
                    "toolCallId": "call_2",
                    "state": "output-available",
                    "input": {"city": "Rome"},
                    "output": "hot",
                },
            )
        ],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    WEATHER_CALL,
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "hot"},
        ],
    ),
    Case(
        "dropped_parts",
        [
            _assistant(
                {"type": "step-start"},
                {
                    "type": "source-url",
                    "sourceId": "s1",
                    "url": "https://example.com",
                    "title": "Ex",
                },
                {
                    "type": "source-document",
                    "sourceId": "s2",
                    "mediaType": "application/pdf",
                    "title": "Doc",
                },
                {"type": "data-weather", "id": "d1", "data": {"city": "Paris"}},
                {"type": "text", "text": "Done."},
            )
        ],
        [{"role": "assistant", "content": "Done."}],
    ),
    Case(
        "tool_output_denied",
        [
            _assistant(
                _weather(
                    state="output-denied",
                    approval={"id": "ap1", "approved": False, "reason": "not allowed"},
                )
            )
        ],
        [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "not allowed"},
        ],
        aliases=("ai6", "ai7"),  # tool approval arrived with AI SDK 6
    ),
]
