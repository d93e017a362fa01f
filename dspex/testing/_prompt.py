"""Reading a chat request the way the simulated LM needs it: DSPy's ChatAdapter / JSONAdapter layout.

The system message lists the fields ("Your input fields are:" / "Your output fields are:", one
``N. `name` (type): desc`` line each) and ends with the instructions after "your objective is:";
user messages carry ``[[ ## name ## ]]`` sections; demos are the user/assistant pairs before the last
user message, the assistant side in sections or as a JSON object. Anything else is plain chat.
Parsing is cached per distinct system message and per distinct demo pair: in a run they repeat.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dspex.testing.task import Question, parse_question

__all__ = [
    "FieldDecl",
    "PromptView",
    "SystemView",
    "ToolDecl",
    "answer_field",
    "message_text",
    "read_prompt",
    "sections",
    "tool_calls",
]

_INPUTS_HEADER = "Your input fields are:"
_OUTPUTS_HEADER = "Your output fields are:"
_STRUCTURE_HEADER = "All interactions will be structured"
_OBJECTIVE = "your objective is:"
_JSON_STRUCTURE = "Outputs will be a JSON object"
_JSON_REQUEST = "Respond with a JSON object"
_RESPOND_TAIL = "\n\nRespond with"
_FIELD_LINE = re.compile(r"^\d+\. `([^`]+)` \((.*?)\):", re.MULTILINE)
_SECTION = re.compile(r"\[\[ ## (\w+) ## \]\]")
_SCHEMA_NOTE = "# note: the value you produce must adhere to the JSON schema: "
_CHAT_SCHEMA_LINE = re.compile(r"^\{(\w+)\}\s+" + re.escape(_SCHEMA_NOTE) + r"(.*)$", re.MULTILINE)
_JSON_OUTPUTS = "Outputs will be a JSON object with the following fields."
# ReAct's tool list in the instructions:
# "(1) add, whose description is <desc>...</desc>. It takes arguments {...}."
_TOOL_LINE = re.compile(
    r"^\((\d+)\) (\S+), whose description is <desc>(.*?)</desc>\. It takes arguments (\{.*\})\.$",
    re.MULTILINE,
)
_STEP_KEY = re.compile(r"^(thought|tool_name|tool_args|observation)_(\d+)$")


@dataclass(frozen=True, slots=True)
class FieldDecl:
    """One field as the system message declares it; ``type`` is DSPy's type text, e.g. ``list[str]``."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class ToolDecl:
    """A tool an agent prompt (ReAct) offers: its name and the JSON schema of each argument."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SystemView:
    """What a DSPy-style system message declares; ``schemas`` are the outputs' JSON schemas, by name."""

    inputs: tuple[FieldDecl, ...]
    outputs: tuple[FieldDecl, ...]
    instructions: str
    json_structure: bool
    schemas: dict[str, Any] = field(default_factory=dict)
    tools: tuple[ToolDecl, ...] = ()


@dataclass(slots=True)
class PromptView:
    """A request as the simulated LM sees it."""

    system: SystemView | None
    inputs: dict[str, str]
    last_user: str
    json_mode: bool
    correct_demos: int = 0
    demo_count: int = 0
    question: Question | None = field(default=None)


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@lru_cache(maxsize=2048)
def _system_view(text: str) -> SystemView | None:
    start_in, start_out = text.find(_INPUTS_HEADER), text.find(_OUTPUTS_HEADER)
    if start_out < 0:
        return None
    end_out = text.find(_STRUCTURE_HEADER, start_out)
    outputs = _FIELD_LINE.findall(text, start_out, end_out if end_out >= 0 else len(text))
    inputs = _FIELD_LINE.findall(text, start_in, start_out) if 0 <= start_in < start_out else []
    objective = text.find(_OBJECTIVE)
    instructions = textwrap.dedent(text[objective + len(_OBJECTIVE) :]).strip() if objective >= 0 else ""
    json_structure = _JSON_STRUCTURE in text
    return SystemView(
        inputs=tuple(FieldDecl(n, t) for n, t in inputs),
        outputs=tuple(FieldDecl(n, t) for n, t in outputs),
        instructions=instructions,
        json_structure=json_structure,
        schemas=_json_output_schemas(text) if json_structure else _chat_output_schemas(text),
        tools=_tools(instructions),
    )


def _schema(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _chat_output_schemas(text: str) -> dict[str, Any]:
    found = {name: _schema(schema) for name, schema in _CHAT_SCHEMA_LINE.findall(text)}
    return {name: schema for name, schema in found.items() if isinstance(schema, dict)}


def _json_output_schemas(text: str) -> dict[str, Any]:
    start = text.find("{", text.find(_JSON_OUTPUTS))
    try:
        notes, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else ({}, 0)
    except ValueError:
        return {}
    schemas = {}
    for name, note in notes.items() if isinstance(notes, dict) else ():
        if isinstance(note, str) and _SCHEMA_NOTE in note:
            schema = _schema(note.split(_SCHEMA_NOTE, 1)[1])
            if isinstance(schema, dict):
                schemas[name] = schema
    return schemas


def _tools(instructions: str) -> tuple[ToolDecl, ...]:
    tools = []
    for _, name, _, args_text in _TOOL_LINE.findall(instructions):
        try:
            args = ast.literal_eval(args_text)  # a Python dict literal, as ReAct writes it: data only
        except (ValueError, SyntaxError):
            args = {}
        tools.append(ToolDecl(name, args if isinstance(args, dict) else {}))
    return tuple(tools)


def tool_calls(inputs: Mapping[str, str]) -> list[dict[str, str]]:
    """The steps of a ReAct trajectory in a request's inputs (its ``thought_0``... sections), in order."""
    steps: dict[int, dict[str, str]] = {}
    for key, value in inputs.items():
        match = _STEP_KEY.match(key)
        if match:
            steps.setdefault(int(match.group(2)), {})[match.group(1)] = value
    return [steps[index] for index in sorted(steps)]


def sections(text: str) -> dict[str, str]:
    """A message's ``[[ ## name ## ]]`` sections, by name (the "Respond with..." tail left out)."""
    tail = text.rfind(_RESPOND_TAIL)
    if tail >= 0:
        text = text[:tail]
    parts = _SECTION.split(text)
    # parts: [preamble, name1, value1, name2, value2, ...]
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _assistant_outputs(text: str) -> dict[str, str]:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return sections(stripped)


def _find_question(values: Mapping[str, str]) -> Question | None:
    for value in values.values():
        question = parse_question(value)
        if question is not None:
            return question
    return None


def answer_field(names: Sequence[str]) -> str | None:
    """The output field that carries the answer: ``answer`` if present, else the last non-reasoning."""
    if "answer" in names:
        return "answer"
    candidates = [name for name in names if name != "reasoning"]
    return candidates[-1] if candidates else None


@lru_cache(maxsize=8192)
def _demo_correct(user: str, assistant: str) -> bool:
    question = _find_question(sections(user))
    outputs = _assistant_outputs(assistant)
    name = answer_field(list(outputs))
    if question is None or name is None:
        return False
    try:
        return int(outputs[name].strip()) == question.answer
    except ValueError:
        return False


def _count_demos(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    pairs = correct = 0
    for first, second in itertools.pairwise(messages):
        if first.get("role") == "user" and second.get("role") == "assistant":
            pairs += 1
            correct += _demo_correct(message_text(first.get("content")), message_text(second.get("content")))
    return pairs, correct


def read_prompt(messages: Sequence[Mapping[str, Any]], response_format: Any) -> PromptView:
    """Parse a request's messages into a :class:`PromptView` (never raises on odd input)."""
    system_text = next((message_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
    system = _system_view(system_text) if system_text else None
    user_index = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    last_user = message_text(messages[user_index].get("content")) if user_index >= 0 else ""
    inputs = sections(last_user) if system is not None else {}
    demo_count, correct = _count_demos(messages[:user_index]) if user_index > 0 else (0, 0)
    json_mode = bool(response_format) or _JSON_REQUEST in last_user
    question = _find_question(inputs) if system is not None else parse_question(last_user)
    return PromptView(system, inputs, last_user, json_mode, correct, demo_count, question)
