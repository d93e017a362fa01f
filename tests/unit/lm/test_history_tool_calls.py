from __future__ import annotations

from io import StringIO
from typing import Any

from dspex.lm.history import pretty_print_history


def _printed(entry: dict[str, Any]) -> str:
    out = StringIO()
    pretty_print_history([entry], n=1, file=out)
    return out.getvalue()


def test_an_assistant_messages_tool_calls_are_listed_with_parsed_arguments() -> None:
    text = _printed(
        {
            "messages": [
                {"role": "user", "content": "weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "content": "3 C, rain", "tool_call_id": "c1"},
            ],
            "outputs": [{"text": "It rains."}],
        }
    )
    calls_at = text.index("Tool calls:")
    assert text.index("Assistant message:") < calls_at < text.index("Tool message:")
    assert 'weather: {"city": "Oslo"}' in text  # re-serialised, not the raw string
    assert "Response:" in text and "It rains." in text


def test_an_answer_made_only_of_tool_calls_shows_them_and_no_response() -> None:
    text = _printed(
        {
            "messages": [{"role": "user", "content": "find"}],
            "outputs": [
                {"tool_calls": [{"name": "a", "args": {"q": 1}}, {"name": "b", "arguments": "not json"}]}
            ],
        }
    )
    assert "Response:" not in text
    assert 'a: {"q": 1}' in text
    assert "b: not json" in text
