"""``ProgramOfThought``: the LM writes Python, an interpreter runs it, the LM answers from the output.

    pot = ProgramOfThought("question -> answer")
    pred = pot(question="What is 17 * 23?")
    pred.answer, pred.reasoning

Three ChainOfThought predictors, prompted as in DSPy 3.4.1 (so their instructions mean the same):

- ``code_generate``: the inputs -> ``generated_code`` (told to end with ``SUBMIT({...})``);
- ``code_regenerate``: the inputs, ``previous_code`` and its ``error`` -> ``generated_code``;
- ``generate_output``: the inputs, ``final_generated_code`` and ``code_output`` -> the outputs.

Code that fails (:class:`~dspex.primitives.code_interpreter.CodeExecutionError`, ``SyntaxError``, or
a reply in which no code can be found) goes back to ``code_regenerate`` with the error; after
``max_iters`` attempts in all, :class:`ProgramOfThoughtError`. A failure of the interpreter itself
(:class:`~dspex.primitives.code_interpreter.CodeInterpreterError`) and any other exception propagate.

Each call runs in a fresh interpreter from ``interpreter_factory`` (else ``configure(interpreter_factory=
...)``, else the sandboxed ``PythonInterpreter``), shut down when the call ends, however it ends.
A caller that owns an interpreter passes it as the first positional argument, ``pot(interp, question=...)``,
and shuts it down itself. Interpreter calls block, so they run in a worker thread.

Deprecated, as in DSPy 3.4.1: constructing one warns (``DeprecationWarning``); RLM is its replacement.

The helpers at the bottom (parsing a reply's code, running it, an interpreter per call) are shared with
:class:`~dspex.modules.code_act.CodeAct`.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, Self

from dspex._sync import run_in_thread, run_sync
from dspex.adapters import Adapter
from dspex.errors import ConfigurationError, ProgramLoadError, ProgramOfThoughtError
from dspex.lm import LM
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.primitives import Module, Prediction
from dspex.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreter,
    FinalOutput,
    InterpreterFactory,
    check_factory,
    check_interpreter,
    create_interpreter,
)
from dspex.signatures import InputField, OutputField, Signature, ensure_signature

__all__ = [
    "ProgramOfThought",
    "ProgramOfThoughtError",
    "execute_code",
    "interpreter_session",
    "parse_code",
]

logger = logging.getLogger(__name__)

Mode = Literal["generate", "regenerate", "answer"]

_CODE_DESC: Final = "python code that answers the question"
# A fenced block: ```python, ```py or a bare fence, closed or running to the end of the reply.
_FENCE: Final = re.compile(r"```(?:python|py)?[ \t]*[ \n](.*?)\s*(?:```|\Z)", re.DOTALL)
# A bare ``=`` (an assignment or a keyword argument), not ``==``, ``<=``, ``>=`` or ``!=``.
_ASSIGN: Final = re.compile(r"(?<![=!<>])=(?!=)")
_ASSIGNED_NAME: Final = re.compile(r"^(\w+)\s*=(?!=)")


def start_code_module(
    name: str,
    signature: str | type[Signature],
    max_iters: int,
    interpreter_factory: InterpreterFactory | None,
) -> tuple[type[Signature], int]:
    """What ProgramOfThought's and CodeAct's constructors share: DSPy's deprecation warning, the
    factory and ``max_iters`` checked, the signature resolved."""
    warnings.warn(
        f"{name} is deprecated and will be removed in 3.5. RLM is the preferred replacement.",
        DeprecationWarning,
        stacklevel=3,  # the line that built the module
    )
    if interpreter_factory is not None:
        check_factory(interpreter_factory, "interpreter_factory")
    return ensure_signature(signature), check_max_iters(max_iters, name)


class ProgramOfThought(Module):
    """Solve a task by writing and running Python: see the module docstring.

    ``max_iters`` bounds the code attempts (the first one and the regenerations); ``interpreter_factory``
    is a zero-argument callable that makes the interpreter for each call (it may be called from
    several calls at once). ``lm``/``adapter`` go to the three predictors.
    """

    def __init__(
        self,
        signature: str | type[Signature],
        max_iters: int = 3,
        interpreter_factory: InterpreterFactory | None = None,
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        super().__init__()
        self.signature, self.max_iters = start_code_module(
            "ProgramOfThought", signature, max_iters, interpreter_factory
        )
        self._interpreter_factory = interpreter_factory
        self.code_generate = ChainOfThought(self._mode_signature("generate"), lm=lm, adapter=adapter)
        self.code_regenerate = ChainOfThought(self._mode_signature("regenerate"), lm=lm, adapter=adapter)
        self.generate_output = ChainOfThought(self._mode_signature("answer"), lm=lm, adapter=adapter)

    # -- prompts ------------------------------------------------------------------------------

    def _mode_signature(self, mode: Mode) -> type[Signature]:
        """The fields of one predictor, with its instructions."""
        fields = self._mode_fields(mode)
        return fields.with_instructions(self._mode_instructions(mode, fields))

    def _mode_fields(self, mode: Mode) -> type[Signature]:
        if mode == "answer":
            return self.signature.append("final_generated_code", InputField(desc=_CODE_DESC), str).append(
                "code_output", InputField(desc="output of previously-generated python code"), str
            )
        inputs = _inputs_only(self.signature)
        if mode == "regenerate":
            inputs = inputs.append(
                "previous_code", InputField(desc="previously-generated python code that errored"), str
            ).append("error", InputField(desc="error message from previously-generated python code"), str)
        return inputs.append("generated_code", OutputField(desc=_CODE_DESC), str)

    def _mode_instructions(self, mode: Mode, fields: type[Signature]) -> str:
        inputs, outputs = _backticked(fields.input_fields), _backticked(fields.output_fields)
        if mode == "generate":
            final = _backticked(self.signature.output_fields)
            lines = [
                f"You will be given {inputs} and you will respond with {outputs}.",
                f"Generating executable Python code that programmatically computes the correct {outputs}.",
                "After you're done with the computation and think you have the final output, make sure "
                "to submit your output by calling the preloaded function `SUBMIT()`.",
                "You must structure your output in a dict, like "
                f'{{"field_a": value_a, ...}}, with the correct value mapping for the field(s): {final}.',
            ]
        elif mode == "regenerate":
            lines = [
                f"You are given {inputs} due to an error in previous code.",
                "Your task is to correct the error and provide the new `generated_code`.",
            ]
        else:
            lines = [f"Given the final code {inputs}, provide the final {outputs}."]
        return "\n".join(lines)

    # -- calling ------------------------------------------------------------------------------

    async def aforward(self, interpreter: CodeInterpreter | None = None, /, **kwargs: Any) -> Prediction:
        """Write, run and fix code until it runs, then answer from its output.

        ``interpreter``: a caller-owned interpreter (positional only), left running afterwards.
        """
        reject_interpreter_keyword(kwargs, self.signature)
        inputs = {name: kwargs[name] for name in self.signature.input_fields if name in kwargs}
        async with interpreter_session(interpreter, self._interpreter_factory) as session:
            code, output = await self._run_until_success(session, inputs)
        answer: Prediction = await call_predictor(
            self.generate_output, **inputs, final_generated_code=code, code_output=output
        )
        return answer

    def forward(self, interpreter: CodeInterpreter | None = None, /, **kwargs: Any) -> Prediction:
        """DSPy's sync entry point: the same call as :meth:`aforward`."""
        args = () if interpreter is None else (interpreter,)
        return run_sync(self.aforward(*args, **kwargs))

    async def _run_until_success(
        self, interpreter: CodeInterpreter, inputs: dict[str, Any]
    ) -> tuple[str, str]:
        """The first code that runs and its output; ProgramOfThoughtError after ``max_iters`` failures."""
        code, error = "", None
        for attempt in range(1, self.max_iters + 1):
            if attempt == 1:
                reply = await call_predictor(self.code_generate, **inputs)
            else:
                reply = await call_predictor(self.code_regenerate, **inputs, previous_code=code, error=error)
            code, error = parse_code(_generated_code(reply))
            if error is None:
                output, error = await execute_code(interpreter, code)
                if output is not None:
                    return code, output
            logger.warning("ProgramOfThought: attempt %d of %d failed: %s", attempt, self.max_iters, error)
        raise ProgramOfThoughtError(f"Max hops reached. Failed to run ProgramOfThought: {error}")

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The signature and ``max_iters`` (the interpreter factory is not saved)."""
        return {"signature": self.signature.dump(), "max_iters": self.max_iters}

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from the saved signature and ``max_iters``; the predictors' state is overlaid after."""
        state = saved_state(node, "ProgramOfThought")
        signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the program was built (and warned) before
            return cls(signature, max_iters=state["max_iters"])

    def __repr__(self) -> str:
        return f"ProgramOfThought({self.signature.signature_string!r}, max_iters={self.max_iters})"


# -- shared with CodeAct --------------------------------------------------------------------------


def parse_code(text: str) -> tuple[str, str | None]:
    """The code in an LM reply, and an error message when there is none usable.

    As in DSPy: text after a ``---`` line or three blank lines is dropped, a fenced block is taken
    if there is one, and code ending in ``name = ...`` gets ``name`` appended so its value is the output
    (the style of programs written before ``SUBMIT``). A one-line reply with several ``=`` is refused.
    """
    text = text.split("---", 1)[0].split("\n\n\n", 1)[0]
    match = _FENCE.search(text)
    code = match.group(1) if match else text.strip()
    if not code:
        return text, "Error: Empty code after parsing."
    if "\n" not in code and len(_ASSIGN.findall(code)) > 1:
        return text, "Error: Code format is not correct."
    assigned = _ASSIGNED_NAME.match(code.split("\n")[-1].strip())
    if assigned:
        code += "\n" + assigned.group(1)
    return code, None


async def execute_code(interpreter: CodeInterpreter, code: str) -> tuple[str | None, str | None]:
    """``(output as JSON text, None)``, or ``(None, error text)`` when the code failed or did not parse.

    A ``SUBMIT``-ed value is the output. Interpreter failures (``CodeInterpreterError``) and anything
    else propagate: the LM cannot fix them by writing other code.
    """
    try:
        result = await run_in_thread(interpreter.execute, code)
    except (CodeExecutionError, SyntaxError) as exc:
        return None, str(exc)
    if isinstance(result, FinalOutput):
        result = result.output
    # any structure the sandbox returns, as JSON; what JSON cannot hold, as its str()
    return json.dumps(result, default=str), None


@asynccontextmanager
async def interpreter_session(
    given: CodeInterpreter | None, factory: InterpreterFactory | None
) -> AsyncIterator[CodeInterpreter]:
    """The caller's interpreter as is, or a new one from the factory, shut down on the way out."""
    if given is not None:
        check_interpreter(given)
        yield given
        return
    interpreter = await run_in_thread(_new_interpreter, factory)
    try:
        yield interpreter
    finally:
        await run_in_thread(interpreter.shutdown)


def _new_interpreter(factory: InterpreterFactory | None) -> CodeInterpreter:
    # A factory given to the module is used as is (even PythonInterpreter, named explicitly); only
    # without one do the configured factory and then the sandbox apply (and get imported).
    if factory is None:
        return create_interpreter()
    interpreter = factory()
    check_interpreter(interpreter)
    return interpreter


def reject_interpreter_keyword(kwargs: Mapping[str, Any], signature: type[Signature]) -> None:
    """``interpreter=`` is an input only if the signature has one; an interpreter goes first, positionally."""
    if "interpreter" in kwargs and "interpreter" not in signature.input_fields:
        raise TypeError(
            "To use a caller-owned interpreter, pass it as the first positional argument when calling "
            "the module."
        )


async def call_predictor(target: Any, **inputs: Any) -> Any:
    """Await a module's ``acall``; call anything else put in its place (a stand-in, as tests do)."""
    if isinstance(target, Module):
        return await target.acall(**inputs)
    result = target(**inputs)
    return await result if inspect.isawaitable(result) else result


def check_max_iters(value: Any, owner: str) -> int:
    """``value`` if it is an int >= 1, else ConfigurationError naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{owner} max_iters must be an integer >= 1, got {value!r}")
    return value


def saved_state(node: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The ``state`` object of a saved program node, or ProgramLoadError naming ``kind``."""
    state = node.get("state")
    if not isinstance(state, Mapping):
        raise ProgramLoadError(f"a saved {kind} needs its 'state' object")
    return state


def _generated_code(reply: Any) -> str:
    value = getattr(reply, "generated_code", None)
    return "" if value is None else str(value)


def _inputs_only(signature: type[Signature]) -> type[Signature]:
    for name in signature.output_fields:
        signature = signature.delete(name)
    return signature


def _backticked(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"`{name}`" for name in fields)
