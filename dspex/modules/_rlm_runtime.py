"""How an ``RLM`` call meets its interpreter and predictors: factories, payloads, outputs.

Small helpers kept out of :mod:`dspex.modules.rlm` so that the module reads as the loop itself.
"""

from __future__ import annotations

import base64
import inspect
from typing import Any

from dspex._sync import run_in_thread
from dspex.primitives.code_interpreter import CodeInterpreter, InterpreterFactory
from dspex.primitives.sandbox_serializable import SandboxSerializable

__all__ = ["call_predictor", "check_factory", "output_text", "sandbox_factory", "serializable_injection"]


def check_factory(factory: Any) -> None:
    """TypeError for an interpreter instance or a non-callable given as ``interpreter_factory``."""
    if not isinstance(factory, type) and isinstance(factory, CodeInterpreter):
        raise TypeError(
            "interpreter_factory received an interpreter instance, so who owns it is ambiguous: pass an "
            "existing interpreter as the first positional argument when calling the module, or a "
            "zero-argument callable that creates a new interpreter."
        )
    if not callable(factory):
        raise TypeError(
            f"interpreter_factory must be a zero-argument callable that creates a CodeInterpreter, "
            f"not {type(factory).__name__}."
        )


def sandbox_factory() -> InterpreterFactory:
    """DSPy's default factory, the sandbox; imported on first use (it is the heaviest interpreter)."""
    from dspex.primitives.python_interpreter import PythonInterpreter

    return PythonInterpreter


def serializable_injection(name: str, value: SandboxSerializable) -> tuple[str, dict[str, str]]:
    """The code rebuilding ``value`` as ``name`` in the REPL, and the payload variables it reads."""
    payload = value.to_sandbox()
    raw_name = f"_raw_{name}"
    lines: list[str] = []
    if not isinstance(payload, bytes):
        variables = {raw_name: str(payload)}
    else:
        try:
            variables = {raw_name: payload.decode("utf-8")}
        except UnicodeDecodeError:
            encoded_name = f"{raw_name}_base64"
            variables = {encoded_name: base64.b64encode(payload).decode("ascii")}
            lines += ["import base64", f"{raw_name} = base64.b64decode({encoded_name})"]
    setup = value.sandbox_setup()
    if setup:
        lines.append(setup)
    lines.append(value.sandbox_assignment(name, raw_name))
    return "\n".join(lines), variables


def output_text(result: Any) -> str:
    """What ``execute`` returned, as the step's output text (a list of lines is joined)."""
    if isinstance(result, list):
        return "\n".join(map(str, result))
    return str(result) if result else ""


async def call_predictor(target: Any, **inputs: Any) -> Any:
    """Await the predictor's ``acall``; a stand-in without one (tests put one in place) is called
    in a worker thread, where its sync dspex calls find their way back to this loop."""
    acall = getattr(target, "acall", None)
    if callable(acall):
        return await acall(**inputs)
    result = await run_in_thread(target, **inputs)
    return await result if inspect.isawaitable(result) else result
