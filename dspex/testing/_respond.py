"""What the simulated LM answers: the arithmetic task's answer, and plausible values for anything else.

Every value is a function of the request's content id (``request_hash``, 32 hex digits), so the same
request always gets the same answer. Digits 0-12 decide whether an arithmetic answer is correct,
13-20 how a wrong one misses, each other field mixes its name into digits 21-28, and digits 29-31
decide whether a ``garble`` knob turns the answer into text no adapter can parse.

Fields the task does not know get a value of their declared type: ``reasoning`` a short worked
text, a field whose name mentions ``instruction`` a proposed instruction (which sometimes carries the
task's bonus phrases, so that instruction optimizers using the simulated LM as their proposer have
something to find), ``Literal[...]`` one of its options, numbers and booleans from the hash, a
pydantic model (any output whose prompt gives a JSON schema of an object) an object built from the
schema, and any other text ``"simulated <name> NNNN"``. Constraints (``minimum``, ``maxLength``...)
are ignored on purpose, so a test can make the simulation give a value that does not validate.

Agents and feedback:

- RLM and ProgramOfThought code steps on an arithmetic question get code that computes the answer,
  and ProgramOfThought's answer step answers with what the code produced (see :mod:`._code`).

- A ReAct step (outputs ``next_thought``, ``next_tool_name``, ``next_tool_args``, tools listed in the
  instructions) on an arithmetic question calls the tool named for its operation (``add``/``sum``/
  ``plus``, ``sub``/``minus``, ``mul``/``times``/``product``) with the two numbers as its first two
  arguments; once the trajectory holds a call, or when no tool fits, it calls ``finish``.
- A request whose trajectory holds a numeric observation answers with that number (tools are trusted).
- A dict output named ``advice`` (Refine's feedback, SIMBA's rules) next to a ``module_names`` input
  gets one piece of advice per module name, which carries each bonus phrase as often as a proposed
  instruction does.
"""

from __future__ import annotations

import json
import re
import zlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from dspex.testing._code import abusive_code_step, code_output_number, code_step
from dspex.testing._prompt import FieldDecl, PromptView, ToolDecl, answer_field, tool_calls
from dspex.testing._reflect import is_reflection_prompt, reflect, reflect_fields
from dspex.testing.task import Question, accuracy, instruction_phrases_in, near_miss, secret_phrase_in

__all__ = [
    "TUNED_GAIN",
    "Answer",
    "abusive_answer",
    "compose_answer",
    "garbled",
    "hash_fraction",
    "render_outputs",
    "solve_question",
    "tool_words",
]

_LITERAL_OPTION = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_OPENERS = (
    "Answer the arithmetic question",
    "Compute the result the question asks for",
    "Solve the math problem",
    "Work out the value of the expression",
)
# percent chance that a proposed instruction or advice carries each bonus phrase
_BONUS_CHANCE = 35
# The accuracy gain of the model being answered (a simulated fine-tuned model's, else 0), set by
# build_completion around one answer: the answer code deeper down sees the prompt, not the model.
TUNED_GAIN: ContextVar[float] = ContextVar("dspex_sim_tuned_gain", default=0.0)
_CLOSERS = ("", " Give only the final number as the answer.", " Reply with a single integer.")
_REACT_OUTPUTS = ("next_thought", "next_tool_name", "next_tool_args")
_FINISH = "finish"
_TOOL_WORDS = {
    "+": ("add", "sum", "plus"),
    "-": ("sub", "minus", "difference"),
    "*": ("mul", "times", "product"),
}
_SIMPLE_KINDS = ("str", "int", "float", "bool", "Literal[", "list", "dict", "Any")


@dataclass(frozen=True, slots=True)
class Answer:
    """The content to send back and, for an arithmetic question, whether it is correct."""

    content: str
    correct: bool | None


def hash_fraction(request_hash: str, start: int = 0, digits: int = 13) -> float:
    """Hex digits ``start:start+digits`` of the hash as a fraction in [0, 1)."""
    return int(request_hash[start : start + digits], 16) / float(16**digits)


def _draw(request_hash: str, name: str) -> int:
    return int(request_hash[21:29], 16) ^ zlib.crc32(name.encode("utf-8"))


def _bonus_phrases(draw: int) -> tuple[bool, bool]:
    """Whether a proposed text carries "step by step" and "double-check": each with probability
    ``_BONUS_CHANCE`` percent, from separate bits of the draw."""
    return draw % 100 < _BONUS_CHANCE, (draw >> 7) % 100 < _BONUS_CHANCE


def _proposed_instruction(draw: int) -> str:
    has_step, has_check = _bonus_phrases(draw)
    step = " step by step" if has_step else ""
    check = " Double-check the arithmetic before answering." if has_check else ""
    opener = _OPENERS[(draw >> 14) % len(_OPENERS)]
    return f"{opener}{step}.{check}{_CLOSERS[(draw >> 17) % len(_CLOSERS)]}"


def _literal_options(type_text: str) -> list[str]:
    return [single or double for single, double in _LITERAL_OPTION.findall(type_text)]


def _plausible(decl: FieldDecl, draw: int, schema: dict[str, Any] | None = None) -> Any:
    kind = decl.type.strip()
    if schema is not None and _needs_schema(kind, schema):
        return _from_schema(schema, schema.get("$defs", {}), decl.name, draw, depth=0)
    if kind.startswith("Literal[") and (options := _literal_options(kind)):
        return options[draw % len(options)]
    if kind == "int":
        return draw % 100
    if kind == "float":
        return round((draw % 1000) / 1000, 3)
    if kind == "bool":
        return draw % 2 == 0
    if kind.startswith("list"):
        return [f"simulated {decl.name} {draw % 10000:04d}"] if "str" in kind else []
    if kind.startswith("dict"):
        return {}
    if "instruction" in decl.name:
        return _proposed_instruction(draw)
    if "prefix" in decl.name:
        return "Answer:"
    return f"simulated {decl.name} {draw % 10000:04d}"


def _needs_schema(kind: str, schema: dict[str, Any]) -> bool:
    # Simple kinds keep their fixed values; a model (or a list of models) is built from its schema.
    if not kind.startswith(_SIMPLE_KINDS):
        return True
    items = schema.get("items")
    return kind.startswith("list") and isinstance(items, dict) and ("$ref" in items or "properties" in items)


def _from_schema(schema: dict[str, Any], defs: dict[str, Any], name: str, draw: int, depth: int) -> Any:
    """A value of the schema's shape (types only; constraints ignored on purpose)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and depth < 8:
        return _from_schema(defs.get(ref.rsplit("/", 1)[-1], {}), defs, name, draw, depth + 1)
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and options:
        usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"] or options
        return _from_schema(usable[0], defs, name, draw, depth + 1)
    if schema.get("enum"):
        return schema["enum"][draw % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    return _typed_from_schema(schema, defs, name, draw, depth)


def _typed_from_schema(schema: dict[str, Any], defs: dict[str, Any], name: str, draw: int, depth: int) -> Any:
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {
            key: _from_schema(sub, defs, key, draw ^ zlib.crc32(key.encode()), depth + 1)
            for key, sub in properties.items()
            if isinstance(sub, dict) and depth < 8
        }
    if kind == "array":
        items = schema.get("items", {})
        return [_from_schema(items, defs, name, draw + i, depth + 1) for i in range(2)] if depth < 8 else []
    if kind == "integer":
        return draw % 100
    if kind == "number":
        return round((draw % 1000) / 1000, 3)
    if kind == "boolean":
        return draw % 2 == 0
    if kind == "null":
        return None
    return f"simulated {name} {draw % 10000:04d}"


def _advice(view: PromptView, draw: int) -> dict[str, str] | None:
    """Refine's advice: one hint per module named in the ``module_names`` input."""
    try:
        names = json.loads(view.inputs.get("module_names", ""))
    except ValueError:
        return None
    if not isinstance(names, list):
        return None
    return {str(name): _advice_text(draw) for name in names}


def _advice_text(draw: int) -> str:
    # like a proposed instruction, it sometimes carries the bonus phrases, so that a rule SIMBA
    # appends to the instructions can matter (Refine's hints go to the inputs, where they do not)
    has_step, has_check = _bonus_phrases(draw)
    step = " step by step" if has_step else ""
    check = "double-check" if has_check else "check"
    return f"Recompute the answer{step} and {check} it before replying (simulated advice {draw % 10000:04d})."


def tool_words(op: str) -> tuple[str, ...]:
    """Words in the name of a tool that performs ``op`` (``+``, ``-`` or ``*``)."""
    return _TOOL_WORDS.get(op, ())


def _tool_for(question: Question, tools: tuple[ToolDecl, ...]) -> ToolDecl | None:
    words = tool_words(question.op)
    for tool in tools:
        if tool.name != _FINISH and len(tool.args) >= 2 and any(w in tool.name.lower() for w in words):
            return tool
    return None


def _argument(schema: Any, value: int) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return float(value) if kind == "number" else str(value) if kind == "string" else value


def _react_step(view: PromptView) -> dict[str, Any]:
    """An agent step: call the tool for the question's operation once, then finish."""
    tools = view.system.tools if view.system else ()
    question, steps = view.question, tool_calls(view.inputs)
    tool = _tool_for(question, tools) if question is not None and not steps else None
    if tool is None or question is None:
        seen = f" The last observation was {steps[-1].get('observation', '')!r}." if steps else ""
        return {
            "next_thought": f"I have what I need to answer.{seen}",
            "next_tool_name": _FINISH,
            "next_tool_args": {},
        }
    first, second = list(tool.args)[:2]
    args = {
        first: _argument(tool.args[first], question.left),
        second: _argument(tool.args[second], question.right),
    }
    thought = f"I will use {tool.name} to compute {question.left} {question.op} {question.right}."
    return {"next_thought": thought, "next_tool_name": tool.name, "next_tool_args": args}


def _observed_number(view: PromptView) -> int | None:
    for step in reversed(tool_calls(view.inputs)):
        try:
            return int(float(step.get("observation", "").strip()))
        except ValueError:
            continue
    return None


def _reasoning(question: Question | None, answer: int | None, draw: int) -> str:
    if question is None or answer is None:
        return f"Taking the inputs in turn, the outputs follow (simulated reasoning {draw % 10000:04d})."
    expression = f"{question.left} {question.op} {question.right}"
    return f"The question asks for {expression}. Working it out gives {answer}."


def _typed_number(value: int, type_text: str) -> Any:
    kind = type_text.strip()
    if kind == "int":
        return value
    if kind == "float":
        return float(value)
    return str(value)


def _solve(view: PromptView, request_hash: str) -> tuple[int | None, bool | None]:
    question = view.question
    if question is None:
        return None, None
    observed = _observed_number(view)
    if observed is None:  # ProgramOfThought's answer step: the number its code produced
        observed = code_output_number(view)
    if observed is not None:  # an agent's tool already computed it: answer with the observation
        return observed, observed == question.answer
    return solve_question(view, question, request_hash)


def solve_question(
    view: PromptView, question: Question | None, request_hash: str
) -> tuple[int | None, bool | None]:
    """The answer to ``question`` by the accuracy model (the prompt's demos, instructions and
    reasoning), and whether it is correct; (None, None) without a question."""
    if question is None:
        return None, None
    outputs = [decl.name for decl in view.system.outputs] if view.system else []
    p = accuracy(
        correct_demos=view.correct_demos,
        instruction_phrases=instruction_phrases_in(view.system.instructions) if view.system else 0,
        reasoning="reasoning" in outputs,
        secret_phrase=secret_phrase_in(view.system.instructions) if view.system else False,
        tuned_gain=TUNED_GAIN.get(),
    )
    if hash_fraction(request_hash) < p:
        return question.answer, True
    return near_miss(question.answer, int(request_hash[13:21], 16)), False


def _render_chat(values: dict[str, Any]) -> str:
    parts = []
    for name, value in values.items():
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value)
            if isinstance(value, list | dict)
            else str(value)
        )
        parts.append(f"[[ ## {name} ## ]]\n{text}\n\n")
    parts.append("[[ ## completed ## ]]")
    return "".join(parts)


def _field_values(
    view: PromptView, outputs: tuple[FieldDecl, ...], request_hash: str
) -> tuple[dict[str, Any], bool | None]:
    names = [decl.name for decl in outputs]
    if all(name in names for name in _REACT_OUTPUTS):
        step = _react_step(view)
        return {d.name: step.get(d.name, _plausible(d, _draw(request_hash, d.name))) for d in outputs}, None
    code = code_step(view)
    if code is not None:  # RLM or ProgramOfThought writing code for an arithmetic question (see _code)
        return {d.name: code.get(d.name, _plausible(d, _draw(request_hash, d.name))) for d in outputs}, None
    reflected = reflect_fields(view.inputs, names)
    if reflected is not None:  # DSPy's GEPA proposer (see _reflect)
        return reflected, None
    value, correct = _solve(view, request_hash)
    answer_name = answer_field(names)
    schemas = view.system.schemas if view.system else {}
    values: dict[str, Any] = {}
    for decl in outputs:
        draw = _draw(request_hash, decl.name)
        if decl.name == answer_name and value is not None:
            values[decl.name] = _typed_number(value, decl.type)
        elif decl.name == "reasoning":
            values[decl.name] = _reasoning(view.question, value, draw)
        elif decl.name == "advice" and (advice := _advice(view, draw)) is not None:
            values[decl.name] = advice
        else:
            values[decl.name] = _plausible(decl, draw, schemas.get(decl.name))
    return values, correct


def render_outputs(view: PromptView, values: dict[str, Any], request_hash: str) -> str:
    """The prompt's declared outputs in its adapter's format: ``values`` where given, else a
    plausible value of the field's type."""
    outputs = view.system.outputs if view.system else ()
    filled = {}
    for decl in outputs:
        given = decl.name in values
        filled[decl.name] = values[decl.name] if given else _plausible(decl, _draw(request_hash, decl.name))
    return json.dumps(filled, ensure_ascii=False) if view.json_mode else _render_chat(filled)


def compose_answer(view: PromptView, request_hash: str) -> Answer:
    """The simulated LM's reply to the request ``view``, deterministic in ``request_hash``."""
    if view.system is None and is_reflection_prompt(view.last_user):
        return Answer(reflect(view.last_user), None)
    if view.system is None or not view.system.outputs:
        value, correct = _solve(view, request_hash)
        text = str(value) if value is not None else f"This is a simulated response ({request_hash[:8]})."
        return Answer(text, correct)
    values, correct = _field_values(view, view.system.outputs, request_hash)
    if view.json_mode:
        return Answer(json.dumps(values, ensure_ascii=False), correct)
    return Answer(_render_chat(values), correct)


def abusive_answer(view: PromptView, request_hash: str, fraction: float, port: int) -> Answer | None:
    """For a ``fraction`` of code steps (hash digits 21-23), an answer whose code abuses the sandbox
    (see :mod:`._code`); None for every other request."""
    if fraction <= 0 or hash_fraction(request_hash, 21, 3) >= fraction:
        return None
    values = abusive_code_step(view, request_hash, hash_fraction(request_hash, 24, 3), port)
    return None if values is None else Answer(render_outputs(view, values, request_hash), None)


def _garble_applies(view: PromptView, fields: str | None) -> bool:
    if fields is None:
        return True
    outputs = view.system.outputs if view.system else ()
    return any(fields in decl.name for decl in outputs)


def garbled(
    answer: Answer, view: PromptView, request_hash: str, fraction: float, fields: str | None
) -> Answer:
    """``answer``, or for a ``fraction`` of requests (hash digits 29-31, so reproducible) prose in no
    adapter's format: no ``[[ ## name ## ]]`` sections, no JSON object. ``fields`` limits it to
    signatures with an output field whose name contains that text (e.g. ``"instruction"``: only
    proposals of instruction optimizers come back unparseable)."""
    if fraction <= 0 or hash_fraction(request_hash, 29, 3) >= fraction or not _garble_applies(view, fields):
        return answer
    text = f"Sorry, I lost track of the format here (simulated garbled answer {request_hash[:8]})."
    return Answer(text, None if answer.correct is None else False)
