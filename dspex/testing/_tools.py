"""The simulated LM's native tool calls: a scripted agent for requests that carry ``tools``.

A simulation, not a model: the script is fixed and deterministic in the request. For a request
whose ``tools`` (OpenAI's ``[{"type": "function", "function": {...}}]``) include ``submit`` (an
agent such as ReActV2), on the arithmetic task:

1. First turn: call every other tool once, all in one assistant message (``tool_calls``), or one
   per turn when the request sets ``parallel_tool_calls: false``. The tool named for the question's
   operation (``add``/``sum``/``plus``, ``sub``/``minus``, ``mul``/``times``/``product``) gets the
   two numbers as its first two arguments; other arguments get a value of their schema type (the
   question's text for strings, its left number for numbers).
2. Once every tool has a result in the conversation (``role: tool`` messages): call ``submit``.
   The answer is the operation tool's result when it is a number (tools are trusted), else the
   arithmetic task's accuracy model decides (:func:`dspex.testing._respond.solve_question`), so a
   tool that failed changes how the answer was found, not whether the example ends.

``tool_choice`` naming a function forces that one call (a forced ``submit`` ends the script at
once); ``tool_choice: "none"`` gets a plain answer. Requests whose tools have no ``submit`` get the
same first turn and then a plain answer. Call ids are ``call_<request hash>_<n>``.

The same script answers agents that call tools in text (ReActV2 with an adapter that does no native
function calling): tools listed in a ``tools`` input, earlier calls in ``tool_calls`` sections of
the assistant's answers, results in ``tool_call_results`` sections; the calls go into the
``tool_calls`` output field as ``{"tool_calls": [{"name": ..., "args": ...}]}``.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dspex.testing._prompt import PromptView, answer_field, message_text, sections
from dspex.testing._respond import render_outputs, solve_question, tool_words
from dspex.testing.task import Question, parse_question

__all__ = ["SUBMIT", "ToolSpec", "ToolTurn", "read_tools", "text_tool_turn", "tool_turn"]

SUBMIT: Final = "submit"
_TEXT_TOOL = re.compile(
    r"^(\S+), whose description is <desc>.*?</desc>\. It takes arguments (\{.*\})\.$", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the request offers: its name and the JSON schema of its parameters."""

    name: str
    parameters: dict[str, Any]

    @property
    def properties(self) -> dict[str, Any]:
        properties = self.parameters.get("properties")
        return properties if isinstance(properties, dict) else {}

    @property
    def required(self) -> list[str]:
        required = self.parameters.get("required")
        return [str(n) for n in required] if isinstance(required, list) else list(self.properties)


@dataclass(frozen=True, slots=True)
class ToolTurn:
    """The assistant's message for a tool-calling request; ``correct`` is set on an arithmetic submit."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    correct: bool | None = None


def read_tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    """The functions of the request's ``tools`` (entries that are not functions are skipped)."""
    specs = []
    for entry in body.get("tools") or ():
        function = entry.get("function") if isinstance(entry, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            schema = dict(parameters) if isinstance(parameters, Mapping) else {}
            specs.append(ToolSpec(function["name"], schema))
    return specs


def tool_turn(body: Mapping[str, Any], view: PromptView, request_hash: str) -> ToolTurn | None:
    """The scripted native tool calls answering ``body``, or None when the answer is plain content."""
    tools = read_tools(body)
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    messages = body["messages"]
    script = _Script(tools, _results_by_tool(messages), view.question or _question_in(messages), view)
    chosen = script.choose(_forced_name(choice), parallel=body.get("parallel_tool_calls") is not False)
    if not chosen:
        return None
    calls = [
        _call(f"call_{request_hash[:12]}_{index}", tool.name, script.arguments(tool, request_hash))
        for index, tool in enumerate(chosen)
    ]
    return ToolTurn(_thought(view, chosen, request_hash), calls, script.correct)


def text_tool_turn(body: Mapping[str, Any], view: PromptView, request_hash: str) -> ToolTurn | None:
    """The same script for tool calls in text (an agent whose adapter does no native function
    calling): the calls go into the ``tool_calls`` output field, as ``{"tool_calls": [...]}``."""
    outputs = {decl.name for decl in view.system.outputs} if view.system else set()
    tools = _text_tools(view.inputs.get("tools", ""))
    if not {"next_thought", "tool_calls"} <= outputs or not tools:
        return None
    messages = body["messages"]
    script = _Script(tools, _text_results_by_tool(messages), view.question or _question_in(messages), view)
    chosen = script.choose(None, parallel=True)
    calls = [{"name": tool.name, "args": script.arguments(tool, request_hash)} for tool in chosen]
    values = {"next_thought": _thought_text(chosen), "tool_calls": {"tool_calls": calls}}
    return ToolTurn(render_outputs(view, values, request_hash), [], script.correct)


@dataclass(slots=True)
class _Script:
    """The agent's plan for one request: which tools to call, with what, and the submitted answer."""

    tools: list[ToolSpec]
    results: dict[str, list[str]]
    question: Question | None
    view: PromptView
    correct: bool | None = None

    def choose(self, forced: str | None, *, parallel: bool) -> list[ToolSpec]:
        """Every tool not called yet (one if not ``parallel``), else ``submit``; or the forced one."""
        if forced is not None:
            return [tool for tool in self.tools if tool.name == forced][:1]
        chosen = [tool for tool in self.tools if tool.name != SUBMIT and tool.name not in self.results]
        if not parallel:
            chosen = chosen[:1]
        return chosen or [tool for tool in self.tools if tool.name == SUBMIT]

    def arguments(self, tool: ToolSpec, request_hash: str) -> dict[str, Any]:
        if tool.name != SUBMIT:
            return _arguments(tool, self.question)
        arguments, self.correct = _submit_arguments(
            tool, self.question, self.results, self.tools, request_hash, self.view
        )
        return arguments


def _forced_name(choice: Any) -> str | None:
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    return name if isinstance(name, str) else None


def _question_in(messages: Sequence[Mapping[str, Any]]) -> Question | None:
    """The arithmetic question of the latest user message that asks one (an agent's later turns
    carry the inputs only in their first user message)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        text = message_text(message.get("content"))
        for value in (*sections(text).values(), text):
            question = parse_question(value)
            if question is not None:
                return question
    return None


def _results_by_tool(messages: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each called tool's results, by tool name (a call still without a result counts, with none)."""
    names: dict[str, str] = {}
    results: dict[str, list[str]] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                names[str(call.get("id"))] = function["name"]
                results.setdefault(function["name"], [])
        if message.get("role") == "tool":
            name = names.get(str(message.get("tool_call_id"))) or str(message.get("name"))
            results.setdefault(name, []).append(message_text(message.get("content")))
    return results


def _op_tool(question: Question | None, tools: Sequence[ToolSpec]) -> ToolSpec | None:
    if question is None:
        return None
    words = tool_words(question.op)
    for tool in tools:
        if tool.name != SUBMIT and len(tool.properties) >= 2 and any(w in tool.name.lower() for w in words):
            return tool
    return None


def _typed(schema: Any, number: int, text: str) -> Any:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return {
        "integer": number,
        "number": float(number),
        "boolean": True,
        "array": [],
        "object": {},
    }.get(str(kind), text if kind == "string" or kind is None else str(number))


def _arguments(tool: ToolSpec, question: Question | None) -> dict[str, Any]:
    left = question.left if question else 1
    text = question.text if question else "simulated query"
    values = {name: _typed(tool.properties.get(name), left, text) for name in tool.required}
    if question is not None and _op_tool(question, [tool]) is tool:
        first, second = list(tool.properties)[:2]
        values[first] = _typed(tool.properties[first], question.left, str(question.left))
        values[second] = _typed(tool.properties[second], question.right, str(question.right))
    return values


def _number(text: str) -> int | None:
    try:
        return int(float(json.loads(text) if text.startswith('"') else text))
    except (ValueError, TypeError):
        return None


def _submit_arguments(
    tool: ToolSpec,
    question: Question | None,
    results: Mapping[str, list[str]],
    tools: Sequence[ToolSpec],
    request_hash: str,
    view: PromptView,
) -> tuple[dict[str, Any], bool | None]:
    op = _op_tool(question, tools)
    texts = results.get(op.name, []) if op is not None else []
    observed = [n for text in texts if (n := _number(text.strip())) is not None]
    value: int | None
    correct: bool | None
    if observed:
        value, correct = observed[-1], question is not None and observed[-1] == question.answer
    else:
        value, correct = solve_question(view, question, request_hash)
    target = answer_field(list(tool.properties))
    arguments = {name: _typed(tool.properties.get(name), 0, f"simulated {name}") for name in tool.required}
    if target is not None and value is not None:
        arguments[target] = _typed(tool.properties.get(target), value, str(value))
    return arguments, correct if question is not None else None


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _thought_text(chosen: Sequence[ToolSpec]) -> str:
    if not chosen or chosen[0].name == SUBMIT:
        return "I have what I need; submitting."
    return f"I will call {', '.join(tool.name for tool in chosen)}."


def _thought(view: PromptView, chosen: Sequence[ToolSpec], request_hash: str) -> str | None:
    """The message's content: a thought, in the adapter's format when the prompt declares outputs."""
    thought = _thought_text(chosen)
    if view.system is None or not view.system.outputs:
        return thought
    return render_outputs(view, {"next_thought": thought}, request_hash)


def _text_tools(listing: str) -> list[ToolSpec]:
    """The tools of a ``tools`` input as adapters write it: a JSON list of "name, whose description
    is <desc>...</desc>. It takes arguments {...}." strings."""
    try:
        entries = json.loads(listing) if listing else []
    except ValueError:
        return []
    specs = []
    for entry in entries if isinstance(entries, list) else ():
        match = _TEXT_TOOL.match(str(entry))
        if match is None:
            continue
        try:
            args = ast.literal_eval(match.group(2))  # a Python dict literal: data only
        except (ValueError, SyntaxError):
            args = {}
        properties = args if isinstance(args, dict) else {}
        required = [name for name, schema in properties.items() if not _has_default(schema)]
        specs.append(ToolSpec(match.group(1), {"properties": properties, "required": required}))
    return specs


def _has_default(schema: Any) -> bool:
    return isinstance(schema, Mapping) and "default" in schema


def _text_results_by_tool(messages: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each called tool's results, from the ``tool_calls`` sections of earlier answers and the
    ``tool_call_results`` sections of the user messages after them."""
    results: dict[str, list[str]] = {}
    for message in messages:
        found = sections(message_text(message.get("content")))
        for key, field in (("tool_calls", "tool_calls"), ("tool_call_results", "tool_call_results")):
            for item in _json_items(found.get(key), field):
                name = item.get("name")
                if isinstance(name, str):
                    values = results.setdefault(name, [])
                    if key == "tool_call_results":
                        values.append(str(item.get("value")))
    return results


def _json_items(text: str | None, field: str) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return []
    items = data.get(field) if isinstance(data, Mapping) else None
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []
