"""``ReActV2``: an agent that calls tools (several per turn) and ends by calling ``submit``.

    async def weather(city: str) -> str:
        \"\"\"Current weather of a city.\"\"\"
        ...

    agent = ReActV2("question -> answer", tools=[weather, population], max_iters=8)
    pred = await agent.acall(question="Is Paris warmer than Berlin today?")
    pred.answer, pred.termination_reason, pred.history.messages

DSPy 3.4.1's ReActV2: each turn, the inner predictor ``react`` sees the inputs, the conversation so
far (a :class:`~dspex.History`) and the tools (natively, as the request's ``tools``, when the adapter
and LM do function calling; as text otherwise), and answers ``next_thought`` (a
:class:`~dspex.Reasoning`) and ``tool_calls`` (:class:`~dspex.ToolCalls`). The calls run, and the turn
goes into the history: the inputs (first turn only), the thought and the calls carrying their
results (``tool_calls.tool_call_results``), each result tied to its call by id (the provider's, or
``call_<turn>_<index>``). A successful call of ``submit`` (a tool taking the signature's outputs as
arguments) ends the loop: ``termination_reason="submit"``. A turn with no calls, an answer that
cannot be parsed, a context overflow, or ``max_iters`` turns end it too, with one last request that
must call ``submit`` (``tool_choice``, reasoning off): ``termination_reason="forced_submit"``.
The prediction holds the outputs, ``history`` (the trajectory) and ``termination_reason``.

Where dspex differs from DSPy, and why:

- A turn's calls run **concurrently** (DSPy runs them one after another), so a turn waits for its
  slowest tool, not for the sum; results are reported in call order, and ``submit`` runs after the
  turn's other calls. A tool that must not overlap others says so in its policy (``run_alone``).
- Each call runs under its tool's :class:`~dspex.modules._tool_runner.ToolPolicy` (timeout, retries,
  a circuit breaker per service); set it with ``@tool_policy(...)`` on the function or
  ``ReActV2(..., policies={"name": ToolPolicy(...)})``. A tool whose breaker is open is not called:
  the LM reads ``"Tool <name> unavailable, circuit open ..."`` and can do without it.
- Nothing a tool does ends the example: an unknown tool, invalid arguments (checked before the call),
  an exception, a timeout or a result JSON cannot hold each become an error result for the LM.
- A forced submit that fails raises :class:`~dspex.errors.AdapterParseError` (DSPy: ``ValueError``);
  a duplicate tool name is a :class:`~dspex.errors.ConfigurationError` (DSPy keeps the last one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Literal, Self, get_args

import pydantic

from dspex._sync import run_sync
from dspex.adapters import Adapter
from dspex.adapters.types import History, Reasoning, Tool, ToolCallResults, ToolCalls
from dspex.errors import AdapterParseError, ConfigurationError, ContextWindowExceededError, ProgramLoadError
from dspex.lm import BaseLM
from dspex.modules._tool_runner import ToolOutcome, ToolPolicy, ToolRunner, error_for_lm, tool_policy
from dspex.modules.predict import Predict
from dspex.modules.react import tool_from_function
from dspex.primitives import Module, Prediction
from dspex.serialization import import_object, import_path_of
from dspex.signatures import InputField, OutputField, Signature, ensure_signature, make_signature

__all__ = [
    "SUBMIT",
    "BreakReason",
    "ReActV2",
    "TerminationReason",
    "ToolPolicy",
    "react_v2_signature",
    "submit_tool",
    "tool_policy",
]

logger = logging.getLogger(__name__)

SUBMIT: Final = "submit"
TerminationReason = Literal["submit", "forced_submit"]
BreakReason = Literal["max_iters", "parse_error", "context_window_exceeded", "empty_tool_calls"]

# Keys every prediction carries besides the outputs, and inputs the inner predictor uses itself.
_RESERVED_OUTPUTS: Final = frozenset({"history", "termination_reason"})
_RESERVED_INPUTS: Final = frozenset({"history", "tools"})
# The forced last turn: only `submit` may be called, and reasoning is off (DSPy's request options).
_FORCED_SUBMIT_CONFIG: Final[Mapping[str, Any]] = {
    "tool_choice": {"type": "function", "function": {"name": SUBMIT}},
    "reasoning_effort": None,
}


class ReActV2(Module):
    """A tool-calling agent over ``signature`` (see the module docstring).

    ``tools``: functions, coroutine functions, callable objects or :class:`~dspex.Tool` objects;
    ``submit`` is reserved. ``max_iters``: turns before the forced submit (a call may pass
    ``max_iters=`` once). ``policies`` (by tool name) and ``default_policy``: how calls are run
    (:class:`ToolPolicy`). ``lm``/``adapter``: the inner predictor's.
    """

    def __init__(
        self,
        signature: str | type[Signature],
        tools: Sequence[Callable[..., Any] | Tool],
        max_iters: int = 20,
        *,
        policies: Mapping[str, ToolPolicy] | None = None,
        default_policy: ToolPolicy | None = None,
        lm: BaseLM | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        super().__init__()
        self.signature: type[Signature] = ensure_signature(signature)
        self.max_iters = max_iters
        _check_field_names(self.signature)
        self.tools = _build_tools(tools)
        self.tools[SUBMIT] = submit_tool(self.signature)
        self.runner = ToolRunner(policies, default_policy)
        self.react = Predict(react_v2_signature(self.signature, self.tools), lm=lm, adapter=adapter)

    def forward(self, **input_args: Any) -> Prediction:
        """DSPy's sync entry point: :meth:`aforward` run to completion."""
        return run_sync(self.aforward(**input_args))

    async def aforward(self, **input_args: Any) -> Prediction:
        """Run turns until ``submit`` succeeds, else force a last submitting turn."""
        max_iters = input_args.pop("max_iters", self.max_iters)
        history = _coerce_history(input_args.pop("history", None))
        pending = {name: input_args[name] for name in self.signature.input_fields if name in input_args}
        reason: BreakReason = "max_iters"
        for turn in range(max_iters):
            step = await self._ask(history, pending)
            if isinstance(step, str):
                reason = step
                break
            pred, calls = step
            if not calls.tool_calls:
                reason = "empty_tool_calls"
                break
            calls = _ensure_tool_call_ids(calls, turn)
            final = await self._run_turn(history, pending, pred, calls)
            pending = {}  # the inputs go into the history once, with the first turn
            if final is not None:
                return Prediction(**final, history=history, termination_reason="submit")
        return await self._forced_submit(history, pending, reason, max_iters)

    async def _ask(
        self, history: History, pending: dict[str, Any]
    ) -> tuple[Prediction, ToolCalls] | BreakReason:
        """The LM's next thought and calls, or why the loop must stop asking."""
        try:
            pred = await self.react.acall(history=history, tools=list(self.tools.values()), **pending)
            return pred, _coerce_tool_calls(getattr(pred, "tool_calls", None))
        except ConfigurationError:
            raise  # no LM, a bad setting: not the model's answer, and no forced submit can help
        except (AdapterParseError, ValueError) as err:
            logger.warning("Ending the ReActV2 loop after a parse failure: %s", error_for_lm(err))
            return "parse_error"
        except ContextWindowExceededError:
            logger.warning("Ending the ReActV2 loop: the context window is exceeded.")
            return "context_window_exceeded"

    async def _run_turn(
        self, history: History, pending: dict[str, Any], pred: Prediction, calls: ToolCalls
    ) -> dict[str, Any] | None:
        """Run the calls, record the turn in ``history``; the final outputs if ``submit`` succeeded."""
        outcomes = await self.runner.run_turn(self.tools, calls.tool_calls, last=(SUBMIT,))
        final = _final_outputs(calls, outcomes)
        results = ToolCallResults.from_tool_calls_and_values(
            calls, [outcome.value for outcome in outcomes], [outcome.is_error for outcome in outcomes]
        )
        event = _history_event(pending, pred, calls, results)
        event.update(final or {})
        if event:
            history.messages.append(event)
        return final

    async def _forced_submit(
        self, history: History, pending: dict[str, Any], reason: BreakReason, turn: int
    ) -> Prediction:
        try:
            pred = await self.react.acall(
                history=history,
                tools=list(self.tools.values()),
                config=dict(_FORCED_SUBMIT_CONFIG),
                **pending,
            )
            calls = _ensure_tool_call_ids(_coerce_tool_calls(getattr(pred, "tool_calls", None)), turn)
        except (AdapterParseError, ValueError, ContextWindowExceededError) as err:
            logger.warning("ReActV2's forced submit failed: %s", error_for_lm(err))
            raise
        submits = ToolCalls(tool_calls=[call for call in calls.tool_calls if call.name == SUBMIT])
        if not submits.tool_calls:
            raise AdapterParseError(
                f"ReActV2 failed to produce final outputs after {reason}: no submit call.",
                raw_text=calls.model_dump_json(),
                signature=self.react.signature,
            )
        final = await self._run_turn(history, pending, pred, submits)
        if final is not None:
            return Prediction(**final, history=history, termination_reason="forced_submit")
        last = history.messages[-1]["tool_calls"].tool_call_results.tool_call_results
        errors = "\n".join(str(result.value) for result in last if result.is_error)
        raise AdapterParseError(
            f"ReActV2 failed to produce final outputs after {reason}: submit failed.\n{errors}",
            raw_text=submits.model_dump_json(),
            signature=self.react.signature,
        )

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The signature, ``max_iters``, the tools by import path and the constructor's policies."""
        tools = [
            import_path_of(tool.func, what=f"ReActV2 tool {name!r}")
            for name, tool in self.tools.items()
            if name != SUBMIT
        ]
        policies = {name: _policy_state(name, policy) for name, policy in self.runner.policies.items()}
        return {
            "signature": self.signature.dump(),
            "tools": tools,
            "max_iters": self.max_iters,
            "policies": policies,
            "default_policy": _policy_state("default", self.runner.default),
        }

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from the saved state, its tools imported under ``allow_modules``."""
        state = node.get("state")
        if not isinstance(state, Mapping):
            raise ProgramLoadError("a saved ReActV2 needs its 'state' object")
        signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
        tools = [
            import_object(path, allow_modules=allow_modules, what="ReActV2 tool") for path in state["tools"]
        ]
        policies = {name: ToolPolicy(**fields) for name, fields in (state.get("policies") or {}).items()}
        default = ToolPolicy(**(state.get("default_policy") or {}))
        return cls(signature, tools, max_iters=state["max_iters"], policies=policies, default_policy=default)

    def __repr__(self) -> str:
        return f"ReActV2({self.signature.signature_string!r}, tools={list(self.tools)})"


# -- building -----------------------------------------------------------------------------------


def _check_field_names(signature: type[Signature]) -> None:
    for names, reserved, role, why in (
        (signature.output_fields, _RESERVED_OUTPUTS, "Output", "attached to every returned Prediction"),
        (
            signature.input_fields,
            _RESERVED_INPUTS,
            "Input",
            "used for its conversation history and tool list",
        ),
    ):
        clash = sorted(reserved.intersection(names))
        if clash:
            listed = ", ".join(f"`{name}`" for name in clash)
            raise ConfigurationError(
                f"{role} field name(s) {listed} are reserved by ReActV2 ({why}). "
                f"Rename these {role.lower()} fields on your signature."
            )


def _build_tools(tools: Sequence[Callable[..., Any] | Tool]) -> dict[str, Tool]:
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise ConfigurationError(f"ReActV2(tools=...) takes a list of tools, got {type(tools).__name__}")
    built: dict[str, Tool] = {}
    for item in tools:
        tool = item if isinstance(item, Tool) else tool_from_function(item)
        name = tool.name or ""
        if name == SUBMIT:
            raise ConfigurationError("`submit` is reserved by ReActV2 as the final-output tool.")
        if name in built:
            raise ConfigurationError(f"ReActV2 tool name {name!r} is given twice; rename one of them")
        built[name] = tool
    return built


def submit_tool(signature: type[Signature]) -> Tool:
    """The ``submit`` tool: takes the signature's outputs, returns them as a dict (DSPy's)."""
    outputs = signature.output_fields
    names = list(outputs)

    def submit(**kwargs: Any) -> dict[str, Any]:
        missing = [name for name in names if name not in kwargs]
        if missing:
            raise ValueError(f"Missing required final output field(s): {', '.join(missing)}")
        return {name: kwargs[name] for name in names}

    return Tool(
        submit,
        name=SUBMIT,
        desc="Submit the final outputs for the task.",
        args={name: _json_schema(spec.annotation) for name, spec in outputs.items()},
        arg_types={name: spec.annotation for name, spec in outputs.items()},
    )


def react_v2_signature(signature: type[Signature], tools: Mapping[str, Tool]) -> type[Signature]:
    """The inner predictor's signature: optional inputs, ``history`` and ``tools`` ->
    ``next_thought`` and ``tool_calls``, with DSPy's agent instructions."""
    fields: dict[str, Any] = {
        name: (_optional(spec.annotation), InputField(desc=spec.extra.get("desc")))
        for name, spec in signature.input_fields.items()
    }
    fields["history"] = (History, InputField())
    fields["tools"] = (list[Tool], InputField())
    fields["next_thought"] = (Reasoning, OutputField())
    fields["tool_calls"] = (ToolCalls, OutputField())
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    names = ", ".join(f"`{name}`" for name in tools)
    instructions = "\n".join(
        [
            signature.instructions,
            f"You are an Agent. Use the supplied tools to produce {outputs} from {inputs}.",
            "Call tools when more information is needed.",
            f"When the final answer is ready, call `submit` with {outputs}.",
            f"The available tools are: {names}.",
        ]
    ).strip()
    return make_signature(fields, instructions)


def _json_schema(annotation: Any) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = pydantic.TypeAdapter(annotation).json_schema()
    except (pydantic.PydanticUserError, TypeError, ValueError):  # not describable: ask for text, as DSPy
        return {"type": "string"}
    return schema


def _optional(annotation: Any) -> Any:
    if type(None) in get_args(annotation):
        return annotation
    try:
        return annotation | None
    except TypeError:  # e.g. a string annotation: leave it as is
        return annotation


# -- one turn -----------------------------------------------------------------------------------


def _coerce_history(history: Any) -> History:
    if history is None:
        return History(messages=[])
    if isinstance(history, History):
        return history
    return History.model_validate(history)


def _coerce_tool_calls(tool_calls: Any) -> ToolCalls:
    if tool_calls is None:
        return ToolCalls(tool_calls=[])
    return ToolCalls.model_validate(tool_calls)


def _ensure_tool_call_ids(tool_calls: ToolCalls, turn: int) -> ToolCalls:
    """The calls, each with an id: the provider's, else ``call_<turn>_<index>``."""
    return ToolCalls(
        tool_calls=[
            call if call.id is not None else call.model_copy(update={"id": f"call_{turn}_{index}"})
            for index, call in enumerate(tool_calls.tool_calls)
        ]
    )


def _final_outputs(calls: ToolCalls, outcomes: Sequence[ToolOutcome]) -> dict[str, Any] | None:
    """What the last successful ``submit`` of the turn returned, if one succeeded."""
    final = None
    for call, outcome in zip(calls.tool_calls, outcomes, strict=True):
        if call.name == SUBMIT and not outcome.is_error and isinstance(outcome.value, dict):
            final = outcome.value
    return final


def _history_event(
    pending: Mapping[str, Any], pred: Prediction, calls: ToolCalls, results: ToolCallResults
) -> dict[str, Any]:
    event = dict(pending)
    thought = getattr(pred, "next_thought", None)
    if thought is not None:
        event["next_thought"] = thought
    if calls.tool_calls:
        if results.tool_call_results:
            calls = calls.model_copy(update={"tool_call_results": results})
        event["tool_calls"] = calls
    return event


def _policy_state(name: str, policy: ToolPolicy) -> dict[str, Any]:
    fields = {key: value for key, value in vars(policy).items() if key != "failure_types"}
    if policy.failure_types != ToolPolicy().failure_types:
        raise ConfigurationError(
            f"the ReActV2 policy of {name!r} names failure_types, which a saved program cannot hold; "
            "set that policy on the tool function with @tool_policy(...) instead"
        )
    return fields
