"""Tool calls in a conversation history, replayed the way DSPy 3.4.1's adapters replay them.

A :class:`~dspex.History` message whose value is a :class:`~dspex.ToolCalls` (possibly carrying its
``tool_call_results``) becomes the assistant turn that made the calls and the turns that answered
them. ``format_conversation_history`` asks :func:`history_tool_turns` about each message; one
without tool calls costs a scan of its values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from dspex.adapters.types.tool import ToolCallResults, ToolCalls
from dspex.signatures import InputField, make_signature

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = ["history_tool_turns"]

Message = dict[str, Any]

_RESULTS_SIGNATURE = make_signature({"tool_call_results": (ToolCallResults, InputField())})


def history_tool_turns(
    adapter: Any, signature: type[Signature], message: Mapping[str, Any]
) -> list[Message] | None:
    """The turns of one history message that holds tool calls; None when it holds none.

    As DSPy replays them: with native function calling, the calls go in the assistant turn's
    ``tool_calls`` and each result follows as a ``tool`` message (only when every call has an id
    and the results answer exactly those ids); without it, the calls are written in the assistant
    turn and the results in a user turn after it.
    """
    found = _tool_calls_in(message)
    if found is None:
        return None
    field, calls = found
    results = _results_of(calls)
    turns: list[Message] = []
    reminder = any(name in message for name in signature.input_fields)
    user = adapter.format_user_message_content(signature, message, main_request=reminder)
    if user:
        turns.append({"role": "user", "content": user})
    if adapter.use_native_function_calling:
        return turns + _native_turns(adapter, signature, message, calls, results)
    values = dict(message)
    if results is not None:  # the results go in their own turn, not inside the calls
        values[field] = calls.model_copy(update={"tool_call_results": None})
    assistant = adapter.format_assistant_message_content(signature, values)
    if assistant:
        turns.append({"role": "assistant", "content": assistant})
    if results is not None:
        content = adapter.format_user_message_content(_RESULTS_SIGNATURE, {"tool_call_results": results})
        turns.append({"role": "user", "content": content})
    return turns


def _tool_calls_in(message: Mapping[str, Any]) -> tuple[str, ToolCalls] | None:
    for name, value in message.items():
        if isinstance(value, ToolCalls) or (isinstance(value, dict) and "tool_calls" in value):
            return name, ToolCalls.model_validate(value)
    return None


def _results_of(calls: ToolCalls) -> ToolCallResults | None:
    if calls.tool_call_results is None:
        return None
    return ToolCallResults.model_validate(calls.tool_call_results)


def _native_turns(
    adapter: Any,
    signature: type[Signature],
    message: Mapping[str, Any],
    calls: ToolCalls,
    results: ToolCallResults | None,
) -> list[Message]:
    shown = signature
    for name, spec in signature.output_fields.items():
        if spec.annotation is ToolCalls or message.get(name) is None:
            shown = shown.delete(name)
    content = adapter.format_assistant_message_content(shown, message) if shown.output_fields else ""
    if results is not None and not _answers_every_call(calls, results):
        results = None  # a provider rejects tool messages that do not answer its calls one to one
    turns: list[Message] = []
    if content or results is not None:
        assistant: Message = {"role": "assistant", "content": content or None}
        if results is not None:
            assistant["tool_calls"] = [_openai_tool_call(call) for call in calls.tool_calls]
        turns.append(assistant)
    for result in results.tool_call_results if results is not None else ():
        turns.append(
            {
                "role": "tool",
                "tool_call_id": result.call_id,
                "name": result.name,
                "content": _text(result.value),
            }
        )
    return turns


def _answers_every_call(calls: ToolCalls, results: ToolCallResults) -> bool:
    call_ids = [call.id for call in calls.tool_calls]
    return all(call_ids) and call_ids == [result.call_id for result in results.tool_call_results]


def _openai_tool_call(call: ToolCalls.ToolCall) -> dict[str, Any]:
    arguments = json.dumps(to_jsonable_python(call.args, fallback=str), ensure_ascii=False)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)
