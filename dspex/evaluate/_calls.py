"""How Evaluate calls what it is given: a program (a dspex module, an ``async def``, a sync callable)
and a metric (a function, an ``async def``, a dspex Module such as ``SemanticF1``)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dspex._sync import run_in_thread, run_sync
from dspex.errors import ConfigurationError, InputError, LMError
from dspex.primitives import Example, Module, Prediction

__all__ = ["ametric", "as_prediction", "inputs_of", "program_caller", "raise_if_systemic", "sync_caller"]


def sync_caller(program: Any) -> Callable[[dict[str, Any]], Any]:
    """Call ``program(**inputs)`` on this thread (DSPy's way), awaiting what an async program returns."""
    if callable(program):

        def call(inputs: dict[str, Any]) -> Any:
            output = program(**inputs)
            return run_sync(output) if inspect.iscoroutine(output) else output

        return call
    acall = getattr(program, "acall", None)
    if callable(acall):
        return lambda inputs: run_sync(acall(**inputs))
    raise _not_a_program(program)


async def ametric(metric: Callable[..., Any], example: Example, prediction: Prediction) -> Any:
    """What ``metric(example, prediction)`` returns, awaited if it is async."""
    # A Module as metric (SemanticF1) is awaited on this loop rather than blocking it in __call__.
    if isinstance(metric, Module):
        return await metric.acall(example, prediction)
    value = metric(example, prediction)
    return await value if inspect.isawaitable(value) else value


def raise_if_systemic(exc: Exception) -> None:
    """Re-raise ``exc`` if it would fail every example the same way."""
    # Every example would fail the same way: stop at once and say why, rather than score 0.
    if isinstance(exc, ConfigurationError) or (isinstance(exc, LMError) and exc.systemic):
        raise exc


def program_caller(program: Any) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """An async call of ``program`` with one example's inputs (a sync program runs in a worker thread)."""
    acall = getattr(program, "acall", None)
    if callable(acall):
        return lambda inputs: acall(**inputs)
    if inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(type(program).__call__):
        return lambda inputs: program(**inputs)
    if callable(program):
        return lambda inputs: run_in_thread(program, **inputs)
    raise _not_a_program(program)


def _not_a_program(program: Any) -> ConfigurationError:
    return ConfigurationError(
        f"cannot evaluate {type(program).__name__}: a program needs `async acall(**inputs)` "
        "or must be callable"
    )


def as_prediction(output: Any) -> Prediction:
    """A program's output as a Prediction (a mapping is converted; anything else is a systemic error)."""
    if isinstance(output, Prediction):
        return output
    if isinstance(output, Mapping):
        return Prediction(output)
    # a ConfigurationError is systemic: the program would return the same kind of thing every time
    raise ConfigurationError(
        f"the program returned {type(output).__name__}; return a Prediction or a mapping of outputs"
    )


def inputs_of(example: Example, index: int) -> dict[str, Any]:
    """The keyword inputs of devset item ``index`` (an InputError names the item if it has none)."""
    if not isinstance(example, Example):
        raise InputError(f"devset item {index} is a {type(example).__name__}, not a dspex.Example")
    try:
        return dict(example.inputs().items())
    except InputError as exc:
        raise InputError(f"devset example {index}: {exc}") from exc
