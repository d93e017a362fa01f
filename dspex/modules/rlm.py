"""``RLM``: a Recursive Language Model, which explores its inputs by writing code in a REPL.

    rlm = RLM("context, query -> answer", max_iters=10)
    pred = await rlm.acall(context=very_long_text, query="What is the magic number?")
    pred.answer, pred.trajectory, pred.final_reasoning

Instead of pasting a long context into the prompt, RLM puts the inputs into a Python REPL as
variables and shows the LM only their type, length and a preview. Each step the LM (predictor
``generate_action``) writes reasoning and code; the code runs, and its printed output joins the
history the next step sees. The code can call ``llm_query(prompt)`` and ``llm_query_batched(prompts)``
to ask a sub-LM (``sub_lm``, else the configured LM) about pieces of the data, the user's ``tools``,
and ``SUBMIT(...)`` to finish with the outputs, which are checked against the signature's types
(a wrong one goes back to the LM as the step's output). After ``max_iters`` steps without
``SUBMIT``, ``extract`` (a Predict over the history) produces the outputs. Reference: "Recursive
Language Models" (Zhang, Kraska, Khattab, 2025); behaviour, names and prompts follow DSPy 3.4.1.

The interpreter: a caller-owned one passed first, positionally (``rlm(interp, query=...)``: tools
are injected, it is left running), else a new one per call from ``interpreter_factory=`` (the
call's, the constructor's, ``configure(interpreter_factory=...)``, or the sandboxed
:class:`~dspex.primitives.python_interpreter.PythonInterpreter`), shut down afterwards. Errors of the
code (:class:`~dspex.primitives.code_interpreter.CodeExecutionError`, ``SyntaxError``) go back to
the LM; a failure of the interpreter itself (:class:`CodeInterpreterError`) ends the call.

Where dspex differs from DSPy, and why:

- Sub-LM queries are dspex LM calls (``BaseLM.acall``: rate limited, counted in usage, priced), and
  ``llm_query_batched`` runs its prompts concurrently on the event loop, not in a thread pool.
- The REPL offers no ``import dspy`` sub-agent facade (DSPy 3.4.1 installs one), so the prompt does
  not advertise it.
- Invalid tool or field names raise :class:`~dspex.errors.ConfigurationError` (a ``ValueError``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import pydantic

from dspex._sync import run_in_thread, run_sync
from dspex.adapters.types.tool import Tool
from dspex.adapters.utils import parse_value
from dspex.errors import InputError, ProgramLoadError
from dspex.lm import LM, LMSettings
from dspex.modules._rlm_prompts import (
    build_action_signature,
    build_extract_signature,
    execution_instructions,
    interpreter_rules,
    strip_code_fences,
)
from dspex.modules._rlm_runtime import (
    call_predictor,
    check_factory,
    output_text,
    sandbox_factory,
    serializable_injection,
)
from dspex.modules._rlm_tools import (
    DEFAULT_BATCH_CONCURRENCY,
    LLMCallBudget,
    check_namespace,
    interpreter_tool,
    make_llm_tools,
    normalize_tools,
)
from dspex.modules.predict import Predict
from dspex.primitives import Module, Prediction
from dspex.primitives.code_interpreter import (
    SIMPLE_TYPES,
    CodeExecutionError,
    CodeInterpreter,
    FinalOutput,
    InterpreterFactory,
    check_interpreter,
    create_interpreter,
    resolve_interpreter_factory,
)
from dspex.primitives.repl_types import REPLEntry, REPLHistory, REPLVariable
from dspex.primitives.sandbox_serializable import SandboxSerializable, build_repl_variable
from dspex.serialization import import_object, import_path_of
from dspex.signatures import Signature, ensure_signature

if TYPE_CHECKING:
    from dspex.lm import BaseLM

__all__ = ["RLM"]

logger = logging.getLogger(__name__)

# DSPy's private name, which its tests import from dspy.predict.rlm.
_strip_code_fences = strip_code_fences

_NO_OUTPUT = "(no output - did you forget to print?)"
_EXTRACT_REASONING = "Extract forced final output"


def _sub_lm_state(sub_lm: Any) -> dict[str, Any] | None:
    """``sub_lm`` as saved: a :class:`~dspex.LM`'s settings (no key); any other sub-LM is not portable."""
    if isinstance(sub_lm, LM):
        return sub_lm.settings().model_dump(mode="json")
    if sub_lm is not None:
        # As Predict does for an LM it cannot describe: the loaded program uses the configured LM.
        logger.warning(
            "RLM sub_lm %r is not a dspex.LM and is not saved; a loaded copy uses the configured LM", sub_lm
        )
    return None


@dataclass(frozen=True)
class _Step:
    """One step's code as run, its output text, and the parsed outputs when it SUBMITted."""

    code: str
    output: str
    outputs: dict[str, Any] | None = None


class RLM(Module):
    """A module that answers by writing and running code over its inputs (see the module doc).

    Args:
        signature: the task, ``"context, query -> answer"`` or a Signature class.
        max_iters: steps (LM call plus code run) before ``extract`` takes over.
        max_llm_calls: sub-LM queries allowed per call, over ``llm_query`` and ``llm_query_batched``.
        max_output_chars: how much of each step's output the history shows (head and tail).
        verbose: log each step's reasoning, code and output at INFO.
        tools: functions or :class:`~dspex.Tool` objects the code can call by name.
        sub_lm: the LM for ``llm_query``/``llm_query_batched``; None: the configured LM at call time.
        interpreter_factory: a zero-argument callable making one interpreter per call; it may
            carry an ``execution_instructions`` string for the prompt.
    """

    def __init__(
        self,
        signature: type[Signature] | str,
        max_iters: int = 20,
        max_llm_calls: int = 50,
        max_output_chars: int = 10_000,
        verbose: bool = False,
        tools: Sequence[Callable[..., Any] | Tool] | None = None,
        sub_lm: BaseLM | Callable[..., Any] | None = None,
        interpreter_factory: InterpreterFactory | None = None,
    ) -> None:
        super().__init__()
        if interpreter_factory is not None:
            check_factory(interpreter_factory)
        self.signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.max_llm_calls = max_llm_calls
        self.max_output_chars = max_output_chars
        self.verbose = verbose
        self.sub_lm = sub_lm
        self._interpreter_factory = (
            interpreter_factory if interpreter_factory is not None else sandbox_factory()
        )
        self._user_tools = normalize_tools(tools)
        check_namespace(
            self._user_tools, list(self.signature.input_fields), list(self.signature.output_fields)
        )
        # The prompt describes the runtime active now; a call on another runtime swaps that part.
        self._initial_execution_instructions = execution_instructions(
            resolve_interpreter_factory(self._interpreter_factory)
        )
        self._action_signature = build_action_signature(
            self.signature,
            notes=self._initial_execution_instructions,
            tools=self._user_tools,
            max_llm_calls=max_llm_calls,
        )
        self.generate_action = Predict(self._action_signature)
        self.extract = Predict(build_extract_signature(self.signature))

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The settings a worker rebuilds this RLM from (its predictors are saved as children).

        Tools are saved by import path, ``sub_lm`` as its LM settings (never a key); the interpreter
        factory is not saved, the loading process provides one. The runtime notes the prompt was
        built with are kept so a call on another runtime swaps them as it would here.
        """
        return {
            "signature": self.signature.dump(),
            "max_iters": self.max_iters,
            "max_llm_calls": self.max_llm_calls,
            "max_output_chars": self.max_output_chars,
            "verbose": self.verbose,
            "tools": [
                import_path_of(tool.func, what=f"RLM tool {name!r}") for name, tool in self.tools.items()
            ],
            "sub_lm": _sub_lm_state(self.sub_lm),
            "execution_instructions": self._initial_execution_instructions,
        }

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from :meth:`program_state`, its tools imported under ``allow_modules``; the
        predictors' saved state (instructions, demos, LMs) is overlaid after."""
        state = node.get("state")
        if not isinstance(state, Mapping):
            raise ProgramLoadError("a saved RLM needs its 'state' object")
        try:
            signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
            tools = [
                import_object(path, allow_modules=allow_modules, what="RLM tool") for path in state["tools"]
            ]
            sub_lm = (
                None
                if state.get("sub_lm") is None
                else LM.from_settings(LMSettings.model_validate(state["sub_lm"]))
            )
            rlm = cls(
                signature,
                max_iters=state["max_iters"],
                max_llm_calls=state["max_llm_calls"],
                max_output_chars=state["max_output_chars"],
                verbose=bool(state.get("verbose", False)),
                tools=tools,
                sub_lm=sub_lm,
            )
        except (KeyError, TypeError, pydantic.ValidationError) as exc:
            raise ProgramLoadError(f"a saved RLM's state is incomplete or invalid ({exc!r})") from exc
        saved_notes = state.get("execution_instructions")
        if isinstance(saved_notes, str):
            # The saved prompt (overlaid onto generate_action next) describes the saving process's
            # runtime: remember it, so a call here replaces exactly that fragment.
            rlm._initial_execution_instructions = saved_notes
        return rlm

    @property
    def tools(self) -> dict[str, Tool]:
        """The user's tools by name (``llm_query`` and ``llm_query_batched`` are not listed)."""
        return dict(self._user_tools)

    # -- calling ------------------------------------------------------------------------------

    async def aforward(
        self,
        interpreter: CodeInterpreter | None = None,
        /,
        *,
        interpreter_factory: InterpreterFactory | None = None,
        **input_args: Any,
    ) -> Prediction:
        """Run the loop; the result has the signature's outputs, ``trajectory`` and ``final_reasoning``.

        ``interpreter``: a caller-owned interpreter (positional only), left running afterwards.
        ``interpreter_factory``: the factory for this call only. ``ValueError`` for missing or
        unknown inputs, before any interpreter is made.
        """
        self._check_call(input_args)
        factory = self._factory_for_call(interpreter_factory)
        budget = LLMCallBudget(self.max_llm_calls)
        execution_tools = self._prepare_execution_tools(budget)
        variables = self._build_variables(**input_args)
        action_signature = None if interpreter is not None else self._action_signature_for(factory)
        async with self._session(interpreter, factory, execution_tools) as repl:
            plain_args = await run_in_thread(self._prepare_serializable_vars, input_args, repl)
            return await self._run_loop(repl, variables, plain_args, action_signature)

    def forward(
        self,
        interpreter: CodeInterpreter | None = None,
        /,
        *,
        interpreter_factory: InterpreterFactory | None = None,
        **input_args: Any,
    ) -> Prediction:
        """DSPy's sync entry point: :meth:`aforward`, run to completion."""
        return run_sync(self.aforward(interpreter, interpreter_factory=interpreter_factory, **input_args))

    # -- the loop -----------------------------------------------------------------------------

    async def _run_loop(
        self,
        repl: CodeInterpreter,
        variables: list[REPLVariable],
        plain_args: dict[str, Any],
        action_signature: type[Signature] | None,
    ) -> Prediction:
        variables_info = [variable.format() for variable in variables]
        history = REPLHistory(max_output_chars=self.max_output_chars)
        for iteration in range(self.max_iters):
            action = await call_predictor(
                self.generate_action,
                variables_info=variables_info,
                repl_history=history,
                iteration=f"{iteration + 1}/{self.max_iters}",
                **({"signature": action_signature} if action_signature is not None else {}),
            )
            reasoning = str(getattr(action, "reasoning", "") or "")
            if self.verbose:
                logger.info(
                    "RLM iteration %d/%d\nReasoning: %s\nCode:\n%s",
                    iteration + 1,
                    self.max_iters,
                    reasoning,
                    action.code,
                )
            step = await self._run_step(repl, str(action.code), plain_args)
            history = history.append(reasoning=reasoning, code=step.code, output=step.output)
            if step.outputs is not None:
                trajectory = [entry.model_dump() for entry in history]
                return Prediction(**step.outputs, trajectory=trajectory, final_reasoning=reasoning)
        return await self._extract_fallback(variables_info, history)

    async def _run_step(self, repl: CodeInterpreter, raw_code: str, plain_args: dict[str, Any]) -> _Step:
        """Run one reply's code; its errors (and a reply that is not Python) become the step's output."""
        try:
            code = strip_code_fences(raw_code)
        except SyntaxError as exc:  # a block fenced as another language
            return _Step(raw_code, f"[Error] {exc}")
        try:
            result = await run_in_thread(repl.execute, code, variables=dict(plain_args))
        except (CodeExecutionError, SyntaxError) as exc:
            return _Step(code, f"[Error] {exc}")
        if isinstance(result, FinalOutput):
            outputs, error = self._process_final_output(result)
            if error is not None:
                return _Step(code, error)
            return _Step(code, f"FINAL: {outputs}", outputs)
        output = self._format_output(output_text(result))
        if self.verbose:
            logger.info("%s", REPLEntry.format_output(output, self.max_output_chars))
        return _Step(code, output)

    async def _extract_fallback(self, variables_info: list[str], history: REPLHistory) -> Prediction:
        logger.warning("RLM reached max iterations, using extract to get final output")
        extracted = await call_predictor(self.extract, variables_info=variables_info, repl_history=history)
        outputs = {name: getattr(extracted, name) for name in self.signature.output_fields}
        trajectory = [entry.model_dump() for entry in history]
        return Prediction(**outputs, trajectory=trajectory, final_reasoning=_EXTRACT_REASONING)

    def _process_final_output(self, result: FinalOutput) -> tuple[dict[str, Any] | None, str | None]:
        """``(outputs parsed to the signature's types, None)``, or ``(None, the error for the LM)``."""
        names = list(self.signature.output_fields)
        raw = result.output
        if not isinstance(raw, dict):
            return None, f"[Error] FINAL returned {type(raw).__name__}, expected dict with fields: {names}"
        missing = sorted(set(names) - raw.keys())
        if missing:
            return None, f"[Error] Missing output fields: {missing}. Use SUBMIT({', '.join(names)})"
        parsed: dict[str, Any] = {}
        problems: list[str] = []
        for name in names:
            annotation = self.signature.output_fields[name].annotation
            try:
                parsed[name] = parse_value(raw[name], annotation)
            except (ValueError, pydantic.ValidationError) as exc:
                expected = getattr(annotation, "__name__", annotation)
                problems.append(f"{name}: expected {expected}, got {type(raw[name]).__name__}: {exc}")
        if problems:
            return None, "[Type Error] " + "; ".join(problems)
        return parsed, None

    def _format_output(self, output: str) -> str:
        """The step's output as recorded (a reminder to print when there is none); the history truncates."""
        return output or _NO_OUTPUT

    # -- inputs -------------------------------------------------------------------------------

    def _check_call(self, input_args: dict[str, Any]) -> None:
        if "interpreter" in input_args and "interpreter" not in self.signature.input_fields:
            raise TypeError(
                "To use a caller-owned interpreter, pass it as the first positional argument "
                "when calling the module."
            )
        names = set(self.signature.input_fields)
        unexpected = sorted(set(input_args) - names)
        if unexpected:
            raise InputError(f"Unexpected inputs not declared in the signature: {unexpected}")
        missing = sorted(names - set(input_args))
        if missing:
            raise InputError(f"Missing required inputs: {missing}")

    def _build_variables(self, **input_args: Any) -> list[REPLVariable]:
        """How the prompt describes each input (a SandboxSerializable describes itself)."""
        variables = []
        for name, value in input_args.items():
            field = self.signature.input_fields.get(name)
            if isinstance(value, SandboxSerializable):
                variables.append(build_repl_variable(value, name, field_info=field))
            else:
                variables.append(REPLVariable.from_value(name, value, field_info=field))
        return variables

    def _prepare_serializable_vars(self, input_args: dict[str, Any], repl: CodeInterpreter) -> dict[str, Any]:
        """Rebuild each SandboxSerializable input inside ``repl``; return the other inputs.

        The payload travels as a variable (never inlined into the code): UTF-8 text as a string,
        other bytes as base64 decoded by the code. Sync: it runs in the interpreter's thread.
        """
        repl.start()
        plain: dict[str, Any] = {}
        for name, value in input_args.items():
            if isinstance(value, SandboxSerializable):
                code, payload_vars = serializable_injection(name, value)
                repl.execute(code, variables=payload_vars)
            else:
                plain[name] = value
        return plain

    # -- the interpreter ----------------------------------------------------------------------

    def _make_llm_tools(
        self, budget: LLMCallBudget | None = None, max_workers: int = DEFAULT_BATCH_CONCURRENCY
    ) -> dict[str, Callable[..., Any]]:
        """``llm_query`` and ``llm_query_batched`` drawing on ``budget`` (a fresh one by default)."""
        budget = budget if budget is not None else LLMCallBudget(self.max_llm_calls)
        return make_llm_tools(self.sub_lm, budget, max_workers)

    def _prepare_execution_tools(self, budget: LLMCallBudget | None = None) -> dict[str, Callable[..., Any]]:
        """Everything the code can call: the sub-LM tools and the user's tools."""
        tools = self._make_llm_tools(budget)
        tools.update({name: interpreter_tool(tool) for name, tool in self._user_tools.items()})
        return tools

    def _inject_execution_context(
        self, interpreter: CodeInterpreter, execution_tools: dict[str, Callable[..., Any]]
    ) -> None:
        """Give ``interpreter`` this call's tools and, when it takes them, the outputs SUBMIT accepts."""
        interpreter.tools.update(execution_tools)
        # Optional interpreter hooks (PythonInterpreter has both): typed SUBMIT, and re-registering
        # the tools, which are new objects with a fresh call budget on every call.
        if hasattr(interpreter, "output_fields"):
            interpreter.output_fields = self._get_output_fields_info()
        if hasattr(interpreter, "_tools_registered"):
            interpreter._tools_registered = False

    def _get_output_fields_info(self) -> list[dict[str, str]]:
        """The outputs for SUBMIT's signature in the sandbox; only simple types are named."""
        fields = []
        for name, field in self.signature.output_fields.items():
            info = {"name": name}
            if field.annotation in SIMPLE_TYPES:
                info["type"] = field.annotation.__name__
            fields.append(info)
        return fields

    @asynccontextmanager
    async def _session(
        self,
        given: CodeInterpreter | None,
        factory: InterpreterFactory,
        execution_tools: dict[str, Callable[..., Any]],
    ) -> AsyncIterator[CodeInterpreter]:
        """The caller's interpreter (left running), or a new one from ``factory``, shut down after."""
        if given is not None:
            check_interpreter(given)
            self._inject_execution_context(given, execution_tools)
            yield given
            return
        interpreter = await run_in_thread(create_interpreter, factory)
        try:
            self._inject_execution_context(interpreter, execution_tools)
            yield interpreter
        finally:
            await run_in_thread(interpreter.shutdown)

    def _factory_for_call(self, override: InterpreterFactory | None) -> InterpreterFactory:
        if override is None:
            return resolve_interpreter_factory(self._interpreter_factory)
        check_factory(override)
        return override

    def _action_signature_for(self, factory: InterpreterFactory) -> type[Signature] | None:
        """An action signature describing ``factory``'s runtime, or None when the predictor's own does.

        Only the runtime fragment is replaced, so instructions an optimizer rewrote survive.
        """
        notes = execution_instructions(factory)
        if notes == self._initial_execution_instructions:
            return None
        current: type[Signature] = getattr(self.generate_action, "signature", self._action_signature)
        old, new = interpreter_rules(self._initial_execution_instructions), interpreter_rules(notes)
        text = current.instructions
        if old and old in text:
            text = text.replace(old, new, 1)
        elif new:
            text += new
        return current.with_instructions(text)
