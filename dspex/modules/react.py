"""``ReAct``: an agent loop of thought, tool call and observation over any signature.

    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    agent = ReAct("question -> answer: int", tools=[add], max_iters=5)
    pred = await agent.acall(question="What is 3 + 4?")
    pred.answer, pred.trajectory["tool_name_0"], pred.trajectory["observation_0"]

Each step asks the LM (predictor ``react``) for ``next_thought``, ``next_tool_name`` and
``next_tool_args``; the tool runs and its result (or error) is appended to the trajectory as the step's
observation. The loop ends when the LM calls ``finish`` or after ``max_iters`` steps; then
``extract`` (a ChainOfThought over the original signature plus the trajectory) produces the outputs.
The prompts follow DSPy 3.4.1's ReAct, so its instructions mean the same thing in both.

Where dspex differs from DSPy, and why:

- ``next_tool_name`` is a ``str`` field (DSPy: a ``Literal`` of the tool names), so that a name that is
  not a tool reaches ReAct and goes back to the LM as an observation instead of failing the parse.
- Tools are :class:`dspex.Tool` objects (a plain function is wrapped in one), described by their name,
  docstring and type hints (as in DSPy, both may be missing: the description is then empty and an
  unhinted parameter takes any JSON value), and checked when the module is built: ``*args`` or a type
  pydantic cannot describe as JSON is a :class:`~dspex.errors.ConfigurationError` naming the tool.
- Arguments are checked (unknown, missing, against each JSON schema) before the call; invalid ones
  go back to the LM as an observation instead of an execution error.
- As in DSPy, a tool that raises gives the LM ``"Execution error in <tool>: "`` and the traceback; an
  LM call that overflows the context window (:class:`~dspex.errors.ContextWindowExceededError`) drops
  the oldest tool call from the trajectory and retries, up to three times (:meth:`ReAct.truncate_trajectory`).
- Async tools are awaited; sync tools run in a worker thread (:meth:`dspex.Tool.acall`), so a
  slow tool does not stall the other calls on the event loop.
- A saved ReAct names its tools by import path; loading imports them under ``allow_modules``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Final, Self

from pydantic import PydanticUserError, TypeAdapter

from dspex._sync import run_sync
from dspex.adapters import Adapter, ChatAdapter
from dspex.adapters.types.tool import Tool
from dspex.configuration import current_settings
from dspex.errors import AdapterParseError, ConfigurationError, ContextWindowExceededError, ProgramLoadError
from dspex.lm import LM
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.primitives import Module, Prediction
from dspex.serialization import import_object, import_path_of
from dspex.signatures import InputField, OutputField, Signature, ensure_signature, make_signature
from dspex.utils.tool_timings import timed_tool_call

__all__ = ["FINISH", "ReAct", "Tool"]

logger = logging.getLogger(__name__)

FINISH: Final = "finish"
_FINISH_OBSERVATION: Final = "Completed."
_TRUNCATION_ATTEMPTS: Final = 3
_KEYS_PER_STEP: Final = 4  # thought, tool_name, tool_args, observation
_TRACEBACK_FRAMES: Final = 5
_DEFAULT_ADAPTER = ChatAdapter()


def build_tools(tools: Sequence[Any]) -> dict[str, Tool]:
    """The tools by name; ConfigurationError for a bad tool, a duplicate name or one named ``finish``.

    Each item is a function (or coroutine function, or callable object), a :class:`Tool`, or a
    DSPy-style tool object (``.func``, ``.name``, ``.desc``, e.g. one of DSPy's own).
    """
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise ConfigurationError(f"ReAct(tools=...) takes a list of functions, got {type(tools).__name__}")
    built: dict[str, Tool] = {}
    for item in tools:
        tool = _as_tool(item)
        name = tool.name or ""
        if name == FINISH or name in built:
            reason = "is reserved for ending the loop" if name == FINISH else "is given twice"
            raise ConfigurationError(f"tool name {name!r} {reason}; rename the function")
        built[name] = tool
    return built


def _as_tool(item: Any) -> Tool:
    if isinstance(item, Tool):
        return item
    func, name = getattr(item, "func", None), getattr(item, "name", None)
    if callable(func) and isinstance(name, str) and not inspect.isroutine(item):
        return tool_from_function(func, name=name, desc=getattr(item, "desc", None) or None)
    return tool_from_function(item)


def tool_from_function(func: Any, *, name: str | None = None, desc: str | None = None) -> Tool:
    """A :class:`Tool` for ``func``; ConfigurationError naming it when the LM could not call it."""
    if not callable(func):
        raise ConfigurationError(f"ReAct tools must be functions or coroutines, got {func!r}")
    label = name or getattr(func, "__name__", None) or type(func).__name__
    for param, hint in _parameters(label, func):
        _check_describable(label, param, hint)
    return Tool(func, name=name, desc=desc)


def _parameters(name: str, func: Callable[..., Any]) -> list[tuple[inspect.Parameter, Any]]:
    target = func if inspect.isfunction(func) or inspect.ismethod(func) else type(func).__call__
    try:
        params = list(inspect.signature(func).parameters.values())
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigurationError(f"tool {name!r}: cannot read its signature or type hints ({exc})") from exc
    described = []
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            raise ConfigurationError(
                f"tool {name!r}: parameter {param.name!r} is {param.kind.description}; "
                "tools take named arguments only (the LM passes a JSON object)"
            )
        if param.kind is not param.VAR_KEYWORD:
            described.append((param, hints.get(param.name, Any)))  # unhinted: any JSON value, as DSPy
    return described


def _check_describable(tool: str, param: inspect.Parameter, hint: Any) -> None:
    try:
        TypeAdapter(hint).json_schema()
    except (PydanticUserError, TypeError) as exc:
        raise ConfigurationError(
            f"tool {tool!r}: parameter {param.name!r} has type {hint!r}, which cannot be described to "
            f"the LM as JSON ({type(exc).__name__}); use str, int, float, bool, list, dict, Literal or a "
            "pydantic model"
        ) from exc


def check_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The keyword arguments for a call of ``tool``; ValueError saying what is wrong with ``arguments``."""
    if not isinstance(arguments, Mapping):
        raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    args = tool.args or {}
    unknown = [] if tool.has_kwargs else sorted(set(arguments) - set(args))
    missing = sorted(name for name in _required(tool) if name not in arguments)
    if unknown or missing:
        raise ValueError(f"unknown arguments {unknown}, missing arguments {missing}; it takes {args}")
    return tool.parse_arguments(arguments)


def _required(tool: Tool) -> list[str]:
    # as format_as_litellm_function_call tells the LM: an argument without a default is required
    return [name for name, schema in (tool.args or {}).items() if "default" not in schema]


def _finish_tool(signature: type[Signature]) -> Tool:
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    desc = (
        "Marks the task as complete. That is, signals that all information for producing the outputs, "
        f"i.e. {outputs}, are now available to be extracted."
    )
    return Tool(func=_finish, name=FINISH, desc=desc, args={})


def _finish() -> str:
    return _FINISH_OBSERVATION


def react_signature(signature: type[Signature], tools: Mapping[str, Tool]) -> type[Signature]:
    """The step signature: the inputs plus ``trajectory`` -> next_thought, next_tool_name, next_tool_args."""
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    lines = [f"{signature.instructions}\n"] if signature.instructions else []
    lines += [
        f"You are an Agent. In each episode, you will be given the fields {inputs} as input. "
        "And you can see your past trajectory so far.",
        f"Your goal is to use one or more of the supplied tools to collect any necessary information "
        f"for producing {outputs}.\n",
        "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in each turn, "
        "and also when finishing the task.",
        "After each tool call, you receive a resulting observation, "
        "which gets appended to your trajectory.\n",
        "When writing next_thought, you may reason about the current situation and plan for future steps.",
        "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
    ]
    every = [*tools.values(), _finish_tool(signature)]
    lines += [f"({index}) {tool}" for index, tool in enumerate(every, start=1)]
    lines.append("When providing `next_tool_args`, the value inside the field must be in JSON format")
    step = signature.with_instructions("\n".join(lines))
    step = step.append("trajectory", InputField(), str)
    step = step.append("next_thought", OutputField(), str)
    step = step.append("next_tool_name", OutputField(), str)
    step = step.append("next_tool_args", OutputField(), dict[str, Any])
    for name in signature.output_fields:
        step = step.delete(name)
    return step


@functools.lru_cache(maxsize=256)
def _trajectory_signature(keys: tuple[str, ...]) -> type[Signature]:
    fields: dict[str, Any] = {key: (str, InputField()) for key in keys}
    return make_signature({**fields, "x": (str, OutputField())})


def format_trajectory(trajectory: Mapping[str, Any], adapter: Adapter | None = None) -> str:
    """The trajectory as ``[[ ## thought_0 ## ]]`` sections, the text the LM sees (DSPy's layout)."""
    if not trajectory:
        return ""
    used = adapter or current_settings().adapter or _DEFAULT_ADAPTER
    return used.format_user_message_content(_trajectory_signature(tuple(trajectory)), trajectory)


class ReAct(Module):
    """A tool-using agent over ``signature``: see the module docstring.

    ``tools``: functions or coroutines with docstrings and type hints; ``max_iters`` bounds the steps
    (a call may pass ``max_iters=`` to change it once). ``lm``/``adapter`` go to both predictors.
    The prediction has the signature's outputs, ``reasoning`` (from the extraction) and ``trajectory``.
    """

    program_alias: ClassVar[str | None] = "dspex.ReAct"

    def __init__(
        self,
        signature: str | type[Signature],
        tools: Sequence[Callable[..., Any] | Tool],
        max_iters: int = 20,
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        self.signature: type[Signature] = ensure_signature(signature)
        self.max_iters = _check_max_iters(max_iters)
        self.tools = build_tools(tools)
        self.react = Predict(react_signature(self.signature, self.tools), lm=lm, adapter=adapter)
        extract = self.signature.append("trajectory", InputField(), str)
        self.extract = ChainOfThought(extract, lm=lm, adapter=adapter)

    async def aforward(self, **inputs: Any) -> Prediction:
        """Run the loop, then extract the outputs from the trajectory."""
        max_iters = _check_max_iters(inputs.pop("max_iters", self.max_iters))
        trajectory: dict[str, Any] = {}
        for step in range(max_iters):
            try:
                pred = await self._async_call_with_potential_trajectory_truncation(
                    self.react, trajectory, **inputs
                )
            except (AdapterParseError, ContextWindowExceededError) as exc:
                # DSPy ends the loop here too: without a readable tool call there is nothing to run.
                logger.warning(
                    "ReAct: ending the trajectory at step %d: %s: %s", step, type(exc).__name__, exc
                )
                break
            except ValueError as exc:
                if isinstance(exc, ConfigurationError):
                    raise
                logger.warning("ReAct: ending the trajectory at step %d, no valid tool call: %s", step, exc)
                break
            name = str(pred.next_tool_name).strip()
            trajectory[f"thought_{step}"] = pred.next_thought
            trajectory[f"tool_name_{step}"] = name
            trajectory[f"tool_args_{step}"] = pred.next_tool_args
            trajectory[f"observation_{step}"] = await self.observe(name, pred.next_tool_args)
            if name == FINISH:
                break
        extracted = await self._async_call_with_potential_trajectory_truncation(
            self.extract, trajectory, **inputs
        )
        return Prediction({"trajectory": trajectory, **dict(extracted.items())})

    def _call_with_potential_trajectory_truncation(
        self, module: Any, trajectory: dict[str, Any], **inputs: Any
    ) -> Any:
        """Sync form of :meth:`_async_call_with_potential_trajectory_truncation` (DSPy's name)."""
        return run_sync(self._async_call_with_potential_trajectory_truncation(module, trajectory, **inputs))

    async def _async_call_with_potential_trajectory_truncation(
        self, module: Any, trajectory: dict[str, Any], **inputs: Any
    ) -> Any:
        """Call ``module`` with the formatted trajectory; on a context overflow truncate it (in place)
        and retry, three attempts in all."""
        last_error: ContextWindowExceededError | None = None
        for _ in range(_TRUNCATION_ATTEMPTS):
            try:
                return await _call(module, **inputs, trajectory=self._format(trajectory))
            except ContextWindowExceededError as exc:
                logger.warning(
                    "Trajectory exceeded the context window, truncating the oldest tool call information."
                )
                last_error = exc
                trajectory = self.truncate_trajectory(trajectory)
        raise ContextWindowExceededError(
            f"The context window was exceeded even after {_TRUNCATION_ATTEMPTS} attempts to truncate the "
            "trajectory."
        ) from last_error

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest tool call (its 4 keys) from ``trajectory``, in place; override to change how.

        A trajectory of one tool call cannot be truncated: ContextWindowExceededError.
        """
        keys = list(trajectory)
        if len(keys) <= _KEYS_PER_STEP:
            raise ContextWindowExceededError(
                "The trajectory is too long so your prompt exceeded the context window, but the trajectory "
                "cannot be truncated because it only has one tool call."
            )
        for key in keys[:_KEYS_PER_STEP]:
            trajectory.pop(key)
        return trajectory

    async def observe(self, name: str, arguments: Any) -> Any:
        """What a tool call gives the LM: the result, or a message saying what went wrong.

        Timed into the run's tool log (:mod:`dspex.utils.tool_timings`); ``finish`` is not a call."""
        if name == FINISH:
            return _FINISH_OBSERVATION
        with timed_tool_call(name) as timing:
            tool = self.tools.get(name)
            if tool is None:
                timing.outcome = "invalid"
                known = ", ".join([*self.tools, FINISH])
                return f"Unknown tool {name!r}: the tools are {known}. Call one of them."
            try:
                kwargs = check_arguments(tool, arguments)
            except ValueError as exc:
                timing.outcome = "invalid"
                return f"Invalid arguments for {name}: {exc}"
            try:
                return await tool.acall(**kwargs)
            except Exception as exc:  # the LM sees the error as the observation and can try again
                timing.outcome = "error"
                logger.info("ReAct tool %s failed: %s: %s", name, type(exc).__name__, exc)
                return f"Execution error in {name}: {_error_for_lm(exc)}"

    def _format(self, trajectory: Mapping[str, Any]) -> str:
        return format_trajectory(trajectory, getattr(self.react, "adapter", None))

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The signature, ``max_iters`` and the tools by import path (lambdas cannot be saved)."""
        tools = [import_path_of(t.func, what=f"ReAct tool {name!r}") for name, t in self.tools.items()]
        return {"signature": self.signature.dump(), "tools": tools, "max_iters": self.max_iters}

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from the saved state, its tools imported under ``allow_modules``."""
        state = _state(node, "ReAct")
        signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
        tools = [
            import_object(path, allow_modules=allow_modules, what="ReAct tool") for path in state["tools"]
        ]
        return cls(signature, tools, max_iters=state["max_iters"])

    def __repr__(self) -> str:
        return f"ReAct({self.signature.signature_string!r}, tools={list(self.tools)})"


async def _call(target: Any, **kwargs: Any) -> Any:
    """Await a module's ``acall``; call anything else (a stand-in function, as DSPy's tests use)."""
    acall = getattr(target, "acall", None)
    result = acall(**kwargs) if acall is not None else target(**kwargs)
    return await result if inspect.isawaitable(result) else result


def _error_for_lm(exc: BaseException) -> str:
    """DSPy's error text for the LM: a newline, then the traceback (at most 5 frames)."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=_TRACEBACK_FRAMES)
    return "\n" + "".join(lines).strip()


def _check_max_iters(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"ReAct max_iters must be an integer >= 1, got {value!r}")
    return value


def _state(node: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    state = node.get("state")
    if not isinstance(state, Mapping):
        raise ProgramLoadError(f"a saved {kind} needs its 'state' object")
    return state
