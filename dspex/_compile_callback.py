"""The callbacks' view of an optimizer's compile: ``on_compile_start`` / ``on_compile_end`` once per
compile the caller made, whatever the optimizer does on the way.

:class:`~dspex.optimizers.Teleprompter` wraps every ``compile`` / ``acompile`` a subclass writes
(and the ``acompile`` it makes from ``start``) with :func:`with_compile_callbacks`. A compile reaches
other compiles of the same optimizer without the caller asking for a second one: an override calling
``super().compile(...)``, the sync ``compile`` running ``acompile`` on an event loop in another
thread, ``acompile`` running a plain ``compile`` in a worker thread. Those are not announced again.
A compile of the same optimizer started in a new asyncio task is a compile of its own (announced,
nested under the one that started it), as in DSPy.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dspex.utils.callback import _Announced, active_callbacks, listening

__all__ = ["with_compile_callbacks"]

F = TypeVar("F", bound=Callable[..., Any])

# Who runs each compile being announced on this call path: (id(optimizer), owner), where the owner
# is the asyncio task running it, or the thread when no task does.
_COMPILING: contextvars.ContextVar[tuple[tuple[int, object], ...]] = contextvars.ContextVar(
    "dspex_compiling", default=()
)
_ABSENT = object()


def with_compile_callbacks(fn: F, *, none_defaults: bool = True) -> F:
    """``fn`` (a compile, sync or async) announced to the callbacks' compile hooks once per compile.

    The start hook's ``inputs`` are ``fn``'s arguments bound to its parameters, defaults included;
    with ``none_defaults=False`` a parameter left at a None default is left out (the ``acompile``
    made from ``start`` has dspex's optional extras, ``executor`` and the like, that DSPy's compile
    does not have).
    """
    # Only module-level functions are named here: cloudpickle copies a wrapper by value, and a
    # context variable it reached would not pickle.
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_compile(instance: Any, *args: Any, **kwargs: Any) -> Any:
            token, announced = _enter(fn, none_defaults, instance, args, kwargs)
            try:
                if announced is None:
                    return await fn(instance, *args, **kwargs)
                with announced:
                    announced.result = await fn(instance, *args, **kwargs)
                return announced.result
            finally:
                _leave(token)

        return async_compile  # type: ignore[return-value]

    @functools.wraps(fn)
    def sync_compile(instance: Any, *args: Any, **kwargs: Any) -> Any:
        token, announced = _enter(fn, none_defaults, instance, args, kwargs)
        try:
            if announced is None:
                return fn(instance, *args, **kwargs)
            with announced:
                announced.result = fn(instance, *args, **kwargs)
            return announced.result
        finally:
            _leave(token)

    return sync_compile  # type: ignore[return-value]


def _enter(
    fn: Callable[..., Any],
    none_defaults: bool,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[contextvars.Token[tuple[tuple[int, object], ...]], _Announced | None]:
    """Mark this compile as running here; its announcement when it is a compile of its own and a
    callback listens."""
    entries = _COMPILING.get()
    owner = _owner()
    fresh = _is_fresh(entries, id(instance), owner)
    token = _COMPILING.set((*entries, (id(instance), owner)))
    if not fresh:
        return token, None
    callbacks = active_callbacks(instance)
    callbacks = listening(callbacks, "compile") if callbacks else callbacks
    if not callbacks:
        return token, None
    try:
        inputs = _compile_inputs(fn, none_defaults, instance, args, kwargs)
        return token, _Announced(callbacks, "compile", instance, inputs)
    except BaseException:
        _COMPILING.reset(token)
        raise


def _leave(token: contextvars.Token[tuple[tuple[int, object], ...]]) -> None:
    _COMPILING.reset(token)


def _owner() -> object:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        task = None
    return task if task is not None else threading.get_ident()


def _is_fresh(entries: tuple[tuple[int, object], ...], key: int, owner: object) -> bool:
    """Whether a compile of optimizer ``key`` run by ``owner`` is a new compile, given the compiles
    of this call path."""
    running = next((who for found, who in reversed(entries) if found == key), _ABSENT)
    if running is _ABSENT:
        return True
    if isinstance(owner, asyncio.Task):
        # The same task: a super() call. A thread: a sync compile blocked on this loop. Another
        # task: a compile the running one started as a task of its own.
        return isinstance(running, asyncio.Task) and running is not owner
    # A task: an async compile blocked on this worker thread. Another thread: the user's own
    # threads (a thread pool running compiles), each a compile of its own.
    return not isinstance(running, asyncio.Task) and running != owner


def _compile_inputs(
    fn: Callable[..., Any], none_defaults: bool, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    signature = inspect.signature(fn)
    try:
        bound = signature.bind(instance, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    given = set(bound.arguments)
    bound.apply_defaults()
    inputs: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        parameter = signature.parameters[name]
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            inputs.update(value)
        elif not none_defaults and value is None and name not in given:
            continue
        else:
            inputs[name] = value
    # The first parameter is the optimizer (whatever the method calls it).
    inputs.pop(next(iter(signature.parameters)), None)
    return inputs
