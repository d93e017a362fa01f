"""The simulated LM's ``POST /v1/responses``: OpenAI's Responses API over the same answers.

A Responses request is read as the chat request it stands for (``input`` items as messages,
``max_output_tokens``, ``text.format`` and flat function tools in their chat shapes), answered by
the simulation's chat logic, and the answer sent back in the Responses shape: an ``output`` list
with a ``message`` item (``output_text``) and one ``function_call`` item per tool call, and usage
as ``input_tokens`` / ``output_tokens``. Counted under the path ``responses``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dspex.testing import _errors as err

if TYPE_CHECKING:
    from dspex.testing._server import SimulatedLM, _Call

__all__ = ["chat_request_of", "responses_answer_of", "responses_routes"]


def responses_routes(sim: SimulatedLM) -> list[web.RouteDef]:
    """The ``/v1/responses`` route bound to ``sim``."""
    return [web.post("/v1/responses", functools.partial(_serve, sim))]


async def _serve(sim: SimulatedLM, request: web.Request) -> web.StreamResponse:
    return await sim._serve("responses", request, functools.partial(_respond, sim))


async def _respond(sim: SimulatedLM, request: web.Request, call: _Call) -> web.StreamResponse:
    body = await err.read_json(request)
    if isinstance(body, web.Response):
        return body
    call.model = body.get("model")
    rejected = sim._auth_error(request) or sim.model_error(body.get("model"))
    if rejected is not None:
        return rejected
    if body.get("stream"):
        return err.bad_request("the simulated Responses API does not stream")
    chat = chat_request_of(body)
    rejected = err.check_chat_body(chat) or sim._fault(request)
    if rejected is not None:
        return rejected
    done = sim.complete(chat)
    call.request_hash, call.prompt_hash = done.request_hash, done.prompt_hash
    call.demos, call.correct = done.demos, done.correct
    await sim._wait_turn(hold=True)
    sim._count_completion(done)
    return web.json_response(responses_answer_of(done.payload))


def chat_request_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-completions request a Responses request ``body`` stands for."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            _add_message(messages, item)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    format_ = (body.get("text") or {}).get("format")
    if isinstance(format_, Mapping) and format_.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {key: value for key, value in format_.items() if key != "type"},
        }
    elif format_ is not None:
        chat["response_format"] = format_
    tools = [_chat_tool(tool) for tool in body.get("tools") or [] if isinstance(tool, Mapping)]
    if tools:
        chat["tools"] = tools
    return chat


def _add_message(messages: list[dict[str, Any]], item: Mapping[str, Any]) -> None:
    kind = item.get("type")
    if kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
        }
        if messages and messages[-1]["role"] == "assistant":  # calls after the turn's text
            messages[-1].setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
    elif "role" in item:
        role = "system" if item["role"] == "developer" else item["role"]
        messages.append({"role": role, "content": _text(item.get("content"))})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text", "text")
    )


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function" or "function" in tool:
        return dict(tool)
    function = {key: value for key, value in tool.items() if key != "type"}
    return {"type": "function", "function": function}


def responses_answer_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A simulated chat.completion ``payload`` in the Responses API's shape."""
    message = payload["choices"][0].get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content") is not None:
        output.append(
            {
                "type": "message",
                "id": f"msg-{payload['id']}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": message["content"], "annotations": []}],
            }
        )
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        output.append(
            {
                "type": "function_call",
                "id": f"fc-{call.get('id')}",
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                "status": "completed",
            }
        )
    usage = payload.get("usage") or {}
    return {
        "id": f"resp-{payload['id']}",
        "object": "response",
        "created_at": payload.get("created"),
        "model": payload.get("model"),
        "status": "completed",
        "output": output,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        },
    }
