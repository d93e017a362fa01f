"""The interface every code interpreter meets, and how a module picks one.

``RLM``, ``ProgramOfThought`` and ``CodeAct`` run model-written Python through an object with
``start``/``execute``/``shutdown`` and a ``tools`` mapping (DSPy 3.4.1's ``CodeInterpreter``).
Which interpreter a module gets is decided when it creates one, in this order: the module's own
``interpreter_factory``, then ``configure(interpreter_factory=...)``, then the sandboxed
:class:`~dspex.primitives.python_interpreter.PythonInterpreter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dspex.errors import CodeExecutionError, CodeInterpreterError

__all__ = [
    "SIMPLE_TYPES",
    "CodeExecutionError",
    "CodeInterpreter",
    "CodeInterpreterError",
    "FinalOutput",
    "InterpreterFactory",
    "check_factory",
    "check_interpreter",
    "create_interpreter",
    "resolve_interpreter_factory",
]

# Annotations a SUBMIT() signature can name directly inside the sandbox.
SIMPLE_TYPES = (str, int, float, bool, list, dict, type(None))


class FinalOutput:
    """What ``execute`` returns once the code called ``SUBMIT(...)``: the loop ends with ``output``."""

    def __init__(self, output: Any) -> None:
        self.output = output

    def __repr__(self) -> str:
        return f"FinalOutput({self.output!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FinalOutput):
            return NotImplemented
        return bool(self.output == other.output)

    __hash__ = None  # type: ignore[assignment]  # equal by value, mutable payload


@runtime_checkable
class CodeInterpreter(Protocol):
    """A stateful Python session: variables defined by one ``execute`` are seen by the next.

    ``start`` is idempotent and may be left to the first ``execute``; after the process behind a
    session dies, ``execute`` raises :class:`CodeInterpreterError` rather than silently starting a
    fresh session that has lost the state. ``execute`` returns a :class:`FinalOutput` when the
    code called ``SUBMIT``, else the captured output (a string, a list of lines or ``None``), and
    raises :class:`CodeExecutionError` for errors of the code, ``SyntaxError`` for code that does
    not parse. ``tools`` are host-side callables the code can call by name with keyword arguments.
    """

    @property
    def tools(self) -> dict[str, Callable[..., Any]]: ...

    def start(self) -> None: ...

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any: ...

    def shutdown(self) -> None: ...


InterpreterFactory = Callable[[], CodeInterpreter]


def check_factory(factory: Any, name: str) -> None:
    """Refuse a factory that is an interpreter itself (who would own it?) or not callable."""
    if not isinstance(factory, type) and isinstance(factory, CodeInterpreter):
        raise TypeError(
            f"{name} got an interpreter instance, not a factory: pass a zero-argument callable "
            "that creates a new interpreter each time it is called"
        )
    if not callable(factory):
        raise TypeError(
            f"{name} must be a zero-argument callable returning a CodeInterpreter, "
            f"not {type(factory).__name__}"
        )


def resolve_interpreter_factory(factory: InterpreterFactory | None = None) -> InterpreterFactory:
    """Return the factory for the next interpreter: the module's, the configured one, or the sandbox.

    ``None`` and ``PythonInterpreter`` both mean "not chosen", since the code-running modules use
    ``PythonInterpreter`` as their default argument. Call it at the moment an interpreter is made,
    so ``dspex.context(interpreter_factory=...)`` applies where the caller expects.
    """
    from dspex.configuration import current_settings
    from dspex.primitives.python_interpreter import PythonInterpreter

    if factory is not None and factory is not PythonInterpreter:
        return factory
    configured = current_settings().interpreter_factory
    if configured is None:
        return PythonInterpreter
    check_factory(configured, "settings.interpreter_factory")
    checked: InterpreterFactory = configured
    return checked


def create_interpreter(factory: InterpreterFactory | None = None) -> CodeInterpreter:
    """Make an interpreter from the resolved factory and check that it meets the interface."""
    interpreter = resolve_interpreter_factory(factory)()
    if not isinstance(interpreter, CodeInterpreter):
        raise TypeError(
            f"interpreter_factory must return a CodeInterpreter, not {type(interpreter).__name__}"
        )
    return interpreter


def check_interpreter(interpreter: Any) -> None:
    """Refuse a caller-given interpreter that lacks the interface, naming its type."""
    if not isinstance(interpreter, CodeInterpreter):
        raise TypeError(f"interpreter must implement CodeInterpreter, not {type(interpreter).__name__}")
