"""OpenAI's Responses API for ``LM(model_type="responses")``.

A call is built as a chat-completions request first (what every adapter produces), then
:func:`chat_to_responses_request` turns it into a ``POST /responses`` body, as DSPy 3.4.1 does:
messages become ``input`` items (text as ``input_text``, or ``output_text`` for assistant turns,
which the API requires; images as ``input_image``; files as ``input_file``; tool calls and tool
results as ``function_call`` / ``function_call_output`` items), ``max_tokens`` becomes
``max_output_tokens``, ``reasoning_effort`` becomes ``reasoning``, function tools and
``response_format`` take the Responses shapes.

The answer goes the other way (:func:`responses_to_chat_answer`): its output items become one
chat-completions choice, so caching, usage, cost and the modules see what a chat call gives.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["chat_to_responses_request", "responses_to_chat_answer"]

# Options the Responses API takes as they are but refuses as explicit nulls.
_DROPPED_WHEN_NONE = ("temperature", "top_p", "n", "logprobs", "reasoning", "tool_choice")
_TEXT_BLOCKS = frozenset({"text", "input_text", "output_text"})


def chat_to_responses_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/responses`` body for chat request ``request`` (``model``, ``messages`` and options).

    A request that already has ``input`` is taken as a Responses request: only ``messages`` is
    dropped. ``request`` itself is not changed.
    """
    if "input" in request:
        return {key: value for key, value in request.items() if key != "messages"}
    data = copy.deepcopy(dict(request))
    messages = data.pop("messages", None) or []
    data["input"] = [item for message in messages for item in _input_items(message)]
    _token_limit(data)
    _reasoning(data)
    _tools(data)
    _text_format(data)
    for key in _DROPPED_WHEN_NONE:
        if data.get(key) is None:
            data.pop(key, None)
    if not data.get("stop"):
        data.pop("stop", None)
    return data


def _input_items(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    role = message.get("role")
    content = message.get("content")
    if role == "tool":
        result: dict[str, Any] = {"type": "function_call_output", "output": _plain_text(content)}
        if message.get("tool_call_id") is not None:
            result["call_id"] = message["tool_call_id"]
        return [result]
    items: list[dict[str, Any]] = []
    blocks = _content_blocks(content, role)
    calls = (message.get("tool_calls") or []) if role == "assistant" else []
    if blocks or not calls:  # an assistant turn that only called tools has no message item
        item: dict[str, Any] = {"role": role, "content": blocks}
        if message.get("name") is not None:
            item["name"] = message["name"]
        items.append(item)
    items.extend(_function_call(call) for call in calls)
    return items


def _content_blocks(content: Any, role: Any) -> list[dict[str, Any]]:
    # The API types replayed model output as output_text and refuses input_text on assistant items.
    text_type = "output_text" if role == "assistant" else "input_text"
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    blocks: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind in _TEXT_BLOCKS:
            blocks.append({"type": text_type, "text": block.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(block["image_url"]))
        elif kind == "file":
            file = block.get("file") or {}
            fields = ("file_data", "file_id", "filename")
            blocks.append({"type": "input_file", **{k: file[k] for k in fields if file.get(k) is not None}})
        else:  # already a Responses block (input_image, input_audio, ...): kept as given
            blocks.append(copy.deepcopy(block))
    return blocks


def _image_block(image: Any) -> dict[str, Any]:
    spec = image if isinstance(image, Mapping) else {"url": image}
    block: dict[str, Any] = {"type": "input_image", "image_url": spec.get("url", "")}
    if spec.get("detail") is not None:
        block["detail"] = spec["detail"]
    return block


def _function_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or call
    item: dict[str, Any] = {
        "type": "function_call",
        "name": function.get("name", ""),
        "arguments": function.get("arguments", "{}"),
    }
    call_id = call.get("call_id") or call.get("id")
    if call_id is not None:
        item["call_id"] = call_id
    return item


def _plain_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        is_text = isinstance(block, Mapping) and block.get("type") in _TEXT_BLOCKS
        parts.append(str(block.get("text", "")) if is_text else str(block))
    return "".join(parts)


def _token_limit(data: dict[str, Any]) -> None:
    # max_completion_tokens is the reasoning models' chat name for the same limit
    if "max_completion_tokens" in data and "max_tokens" not in data:
        data["max_tokens"] = data.pop("max_completion_tokens")
    limit = data.pop("max_tokens", None)
    if limit is not None:
        data["max_output_tokens"] = limit


def _reasoning(data: dict[str, Any]) -> None:
    if "reasoning_effort" in data:
        effort = data.pop("reasoning_effort")
        if data.get("reasoning") is None:
            data["reasoning"] = {"effort": effort, "summary": "auto"}


def _tools(data: dict[str, Any]) -> None:
    tools = data.get("tools")
    if tools:
        data["tools"] = [_flat_tool(tool) for tool in tools]
    choice = data.get("tool_choice")
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        data["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}


def _flat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A chat ``{"type": "function", "function": {...}}`` tool as the Responses API's flat one; any
    other tool (hosted tools such as web search) as given."""
    function = tool.get("function")
    if not isinstance(function, Mapping):
        return dict(tool)
    extra = {key: value for key, value in tool.items() if key not in ("type", "function")}
    flat = {"type": "function", **extra, **function}
    if flat.get("description") is None:
        flat.pop("description", None)
    return flat


def _text_format(data: dict[str, Any]) -> None:
    """``response_format`` as the Responses API's ``text.format``."""
    format_ = data.pop("response_format", None)
    if format_ is None:
        return
    if isinstance(format_, type) and hasattr(format_, "model_json_schema"):  # a pydantic model
        format_ = {"type": "json_schema", "name": format_.__name__, "schema": format_.model_json_schema()}
    elif isinstance(format_, Mapping) and isinstance(format_.get("json_schema"), Mapping):
        # the chat shape nests name/schema/strict under "json_schema"; the Responses one is flat
        format_ = {"type": "json_schema", **format_["json_schema"]}
    data["text"] = {**(data.get("text") or {}), "format": format_}


def responses_to_chat_answer(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/responses`` answer as a chat-completions answer with one choice: the output texts
    joined, function calls as ``tool_calls``, reasoning summaries as ``reasoning_content``, and
    ``input_tokens`` / ``output_tokens`` as ``prompt_tokens`` / ``completion_tokens``."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in data.get("output") or []:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "message":
            texts.extend(_texts(item.get("content"), kinds=_TEXT_BLOCKS))
        elif kind == "function_call":
            calls.append(_chat_tool_call(item))
        elif kind == "reasoning":
            reasoning.extend(_texts(item.get("content") or item.get("summary"), kinds=None))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "model": data.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(data, calls)}],
        "usage": _chat_usage(data.get("usage")),
    }


def _texts(parts: Any, *, kinds: frozenset[str] | None) -> list[str]:
    """The ``text`` of each part (of a type in ``kinds``, unless None) that has one."""
    return [
        str(part["text"])
        for part in parts or []
        if isinstance(part, Mapping) and part.get("text") and (kinds is None or part.get("type") in kinds)
    ]


def _chat_tool_call(item: Mapping[str, Any]) -> dict[str, Any]:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments or {})
    function = {"name": item.get("name", ""), "arguments": arguments}
    call: dict[str, Any] = {"type": "function", "function": function}
    if item.get("call_id") is not None:
        call["id"] = item["call_id"]
    return call


def _finish_reason(data: Mapping[str, Any], calls: list[dict[str, Any]]) -> str:
    if calls:
        return "tool_calls"
    details = data.get("incomplete_details")
    if data.get("status") == "incomplete" and isinstance(details, Mapping):
        return "length" if details.get("reason") == "max_output_tokens" else "content_filter"
    return "stop"


def _chat_usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, Mapping):
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    prompt = int(usage.get("input_tokens") or usage.get("prompt_tokens") or 0)
    completion = int(usage.get("output_tokens") or usage.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
