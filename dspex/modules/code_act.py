"""``CodeAct``: an agent whose actions are Python snippets that may call the given tools.

    def factorial(n: int) -> int:
        \"\"\"The factorial of n.\"\"\"
        return 1 if n <= 1 else n * factorial(n - 1)

    act = CodeAct("n -> factorial: int", tools=[factorial])
    pred = act(n=5)
    pred.factorial, pred.trajectory["generated_code_0"], pred.trajectory["code_output_0"]

Each call opens an interpreter session and defines the tools in it from their source code (so a tool
must be a plain Python function whose source can be read, and must not rely on names the sandbox does
not have). Each step asks the LM (predictor ``codeact``) for ``generated_code`` and ``finished``; the code
runs in the session, whose variables persist between steps, and the trajectory gains
``generated_code_<i>`` with ``code_output_<i>`` (the output as JSON text) or ``observation_<i>`` (why
the code could not be parsed or failed). A failing snippet does not end the loop: the LM sees the
error on the next step. The loop ends when the LM says ``finished`` or after ``max_iters`` steps; then
``extractor`` (a ChainOfThought over the signature plus the trajectory) produces the outputs. The
prompts follow DSPy 3.4.1's CodeAct.

Interpreters are chosen and owned as in :class:`~dspex.modules.program_of_thought.ProgramOfThought`:
a fresh one per call from ``interpreter_factory`` (shut down afterwards), or a caller-owned one given
as the first positional argument, ``act(interp, n=5)``.

Where dspex differs from DSPy, and why:

- Both predictors see the trajectory as ReAct's ``[[ ## generated_code_0 ## ]]`` sections (DSPy gives
  ``codeact`` the raw dict), and both drop the oldest step when the context window overflows.
- A tool given a ``name`` other than its function's is also bound to that name in the sandbox, so
  the name the LM is shown is one it can call.

Deprecated, as in DSPy 3.4.1: constructing one warns (``DeprecationWarning``); RLM is its replacement.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Self

from dspex._sync import run_in_thread, run_sync
from dspex.adapters import Adapter
from dspex.adapters.types.tool import Tool
from dspex.errors import ConfigurationError, ContextWindowExceededError
from dspex.lm import LM
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.modules.program_of_thought import (
    call_predictor,
    check_max_iters,
    execute_code,
    interpreter_session,
    parse_code,
    reject_interpreter_keyword,
    saved_state,
    start_code_module,
)
from dspex.modules.react import format_trajectory
from dspex.primitives import Module, Prediction
from dspex.primitives.code_interpreter import (
    CodeInterpreter,
    InterpreterFactory,
)
from dspex.serialization import import_object, import_path_of
from dspex.signatures import InputField, OutputField, Signature
from dspex.utils.tool_timings import timed_tool_call

__all__ = ["CODE_TOOL", "CodeAct", "codeact_instructions"]

logger = logging.getLogger(__name__)

_TRUNCATION_ATTEMPTS: Final = 3
# The name a step's code run has among a result's tool calls (the tools run inside the sandbox).
CODE_TOOL: Final = "<code>"


class CodeAct(Module):
    """A code-writing agent over ``signature`` with ``tools``: see the module docstring.

    ``tools``: plain functions (or :class:`~dspex.Tool` objects wrapping one), defined in the sandbox
    from their source; ``max_iters`` bounds the steps (a call may pass ``max_iters=`` to change it once);
    ``interpreter_factory`` makes the interpreter for each call. ``lm``/``adapter`` go to both predictors.
    The prediction has the outputs, ``reasoning`` (from the extraction) and ``trajectory``.
    """

    def __init__(
        self,
        signature: str | type[Signature],
        tools: Sequence[Callable[..., Any] | Tool],
        max_iters: int = 5,
        interpreter_factory: InterpreterFactory | None = None,
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        super().__init__()
        self.signature, self.max_iters = start_code_module(
            "CodeAct", signature, max_iters, interpreter_factory
        )
        self.tools: dict[str, Tool] = _build_tools(tools)
        for tool in self.tools.values():
            _tool_source(tool)  # refuse a tool whose source cannot be read now, not at the first call
        self._interpreter_factory = interpreter_factory
        self.codeact = Predict(_step_signature(self.signature, self.tools), lm=lm, adapter=adapter)
        extract = self.signature.append("trajectory", InputField(), str)
        self.extractor = ChainOfThought(extract, lm=lm, adapter=adapter)

    async def aforward(self, interpreter: CodeInterpreter | None = None, /, **kwargs: Any) -> Prediction:
        """Run the steps in one interpreter session, then extract the outputs from the trajectory.

        ``interpreter``: a caller-owned interpreter (positional only), left running afterwards.
        """
        reject_interpreter_keyword(kwargs, self.signature)
        max_iters = check_max_iters(kwargs.pop("max_iters", self.max_iters), "CodeAct")
        inputs = {name: kwargs[name] for name in self.signature.input_fields if name in kwargs}
        sources = [_tool_source(tool) for tool in self.tools.values()]
        async with interpreter_session(interpreter, self._interpreter_factory) as session:
            for source in sources:
                await run_in_thread(session.execute, source)
            trajectory: dict[str, Any] = {}
            for step in range(max_iters):
                if await self._step(session, step, trajectory, inputs):
                    break
        # the answer is read from the trajectory alone: the interpreter is already released
        extracted = await self._call_with_trajectory(self.extractor, trajectory, inputs)
        return Prediction({"trajectory": trajectory, **dict(extracted.items())})

    def forward(self, interpreter: CodeInterpreter | None = None, /, **kwargs: Any) -> Prediction:
        """DSPy's sync entry point: the same call as :meth:`aforward`."""
        args = () if interpreter is None else (interpreter,)
        return run_sync(self.aforward(*args, **kwargs))

    async def _step(
        self, interpreter: CodeInterpreter, step: int, trajectory: dict[str, Any], inputs: dict[str, Any]
    ) -> bool:
        """One snippet: ask, parse, run, record. True when the LM said it is finished."""
        reply = await self._call_with_trajectory(self.codeact, trajectory, inputs)
        code, error = parse_code(str(getattr(reply, "generated_code", None) or ""))
        if error is not None:
            # as in DSPy, an unparsable reply never ends the loop, even marked finished
            trajectory[f"observation_{step}"] = f"Failed to parse the generated code: {error}"
            return False
        trajectory[f"generated_code_{step}"] = code
        with timed_tool_call(CODE_TOOL) as timing:  # the snippet's run, the tools it called included
            output, error = await execute_code(interpreter, code)
            timing.outcome = "ok" if error is None else "error"
        if error is None:
            trajectory[f"code_output_{step}"] = output
        else:
            logger.info("CodeAct: step %d failed: %s", step, error)
            trajectory[f"observation_{step}"] = f"Failed to execute the generated code: {error}"
        return _is_true(getattr(reply, "finished", False))

    async def _call_with_trajectory(
        self, target: Any, trajectory: dict[str, Any], inputs: dict[str, Any]
    ) -> Any:
        """Call ``target`` with the formatted trajectory; on a context overflow drop the oldest step
        (in place) and retry, three attempts in all."""
        last_error: ContextWindowExceededError | None = None
        for _ in range(_TRUNCATION_ATTEMPTS):
            text = format_trajectory(trajectory, getattr(self.codeact, "adapter", None))
            try:
                return await call_predictor(target, **inputs, trajectory=text)
            except ContextWindowExceededError as exc:
                logger.warning("CodeAct: trajectory over the context window, dropping its oldest step")
                last_error = exc
                truncate_trajectory(trajectory)
        raise ContextWindowExceededError(
            f"The context window was exceeded even after {_TRUNCATION_ATTEMPTS} attempts to truncate the "
            "trajectory."
        ) from last_error

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The signature, ``max_iters`` and the tools by import path (not the interpreter factory)."""
        tools = [import_path_of(t.func, what=f"CodeAct tool {name!r}") for name, t in self.tools.items()]
        return {"signature": self.signature.dump(), "tools": tools, "max_iters": self.max_iters}

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from the saved state, its tools imported under ``allow_modules``."""
        state = saved_state(node, "CodeAct")
        signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
        tools = [
            import_object(path, allow_modules=allow_modules, what="CodeAct tool") for path in state["tools"]
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the program was built (and warned) before
            return cls(signature, tools, max_iters=state["max_iters"])

    def __repr__(self) -> str:
        return f"CodeAct({self.signature.signature_string!r}, tools={list(self.tools)})"


def truncate_trajectory(trajectory: dict[str, Any]) -> None:
    """Drop the oldest step's entries, in place; ContextWindowExceededError when only one step is left."""
    steps = sorted({int(key.rsplit("_", 1)[1]) for key in trajectory})
    if len(steps) <= 1:
        raise ContextWindowExceededError(
            "The trajectory is too long so your prompt exceeded the context window, but the trajectory "
            "cannot be truncated because it only has one step."
        )
    for key in [key for key in trajectory if key.endswith(f"_{steps[0]}")]:
        del trajectory[key]


def codeact_instructions(signature: type[Signature], tools: Mapping[str, Tool]) -> str:
    """The step predictor's instructions: the task's own, the agent's brief and the tool list."""
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    lines = [f"{signature.instructions}\n"] if signature.instructions else []
    lines.append(
        f"You are an intelligent agent. For each episode, you will receive the fields {inputs} as input.\n"
        "Your goal is to generate executable Python code that collects any necessary information for "
        f"producing {outputs}.\n"
        "For each iteration, you will generate a code snippet that either solves the task or progresses "
        "towards the solution.\n"
        "Ensure any output you wish to extract from the code is printed to the console. The code should "
        "be enclosed in a fenced code block.\n"
        f"When all information for producing the outputs ({outputs}) are available to be extracted, mark "
        "`finished=True` besides the final Python code.\n"
        "You have access to the Python Standard Library and the following functions:"
    )
    lines += [f"({index}) {tool}" for index, tool in enumerate(tools.values(), start=1)]
    return "\n".join(lines)


def _step_signature(signature: type[Signature], tools: Mapping[str, Tool]) -> type[Signature]:
    step = signature.with_instructions(codeact_instructions(signature, tools))
    for name in signature.output_fields:
        step = step.delete(name)
    step = step.append("trajectory", InputField(), str)
    code_desc = "Python code that when executed, produces output relevant to answering the question"
    step = step.append("generated_code", OutputField(desc=code_desc), str)
    return step.append(
        "finished", OutputField(desc="a boolean flag to determine if the process is done"), bool
    )


def _build_tools(tools: Sequence[Callable[..., Any] | Tool]) -> dict[str, Tool]:
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise ConfigurationError(f"CodeAct(tools=...) takes a list of functions, got {type(tools).__name__}")
    built: dict[str, Tool] = {}
    for item in tools:
        tool = item if isinstance(item, Tool) else Tool(item)
        if not inspect.isfunction(tool.func):
            raise ConfigurationError("CodeAct only accepts functions and not callable objects.")
        name = tool.name or tool.func.__name__
        if name in built:
            raise ConfigurationError(f"CodeAct tool name {name!r} is given twice; rename the function")
        built[name] = tool
    return built


def _tool_source(tool: Tool) -> str:
    """The code that defines ``tool`` in the sandbox: its function's source, bound to the tool's name."""
    func = tool.func
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise ConfigurationError(
            f"CodeAct tool {tool.name!r}: its source code cannot be read ({exc}); define it in a file"
        ) from exc
    if func.__name__ == "<lambda>":
        raise ConfigurationError(f"CodeAct tool {tool.name!r} is a lambda; define it with def")
    if tool.name and tool.name != func.__name__:
        source += f"\n{tool.name} = {func.__name__}\n"
    return source


def _is_true(value: Any) -> bool:
    # the LM's flag arrives parsed as a bool; a stand-in predictor may give the text
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")
