"""Callbacks: DSPy's ``BaseCallback``, the one instrumentation seam of the programming model.

Subclass :class:`BaseCallback` and override the hooks you need; install callbacks process-wide with
``dspex.configure(callbacks=[...])``, for a block with ``dspex.context(callbacks=[...])``, or on one
component (``Predict(..., callbacks=[...])``, ``LM(..., callbacks=[...])``). Every start hook gets a
``call_id`` that its end hook gets too. A hook that raises is logged and never breaks the call.

Beyond DSPy's hooks, dspex's LM reports each HTTP attempt (``on_lm_attempt``) and each call as a
whole (``on_lm_request``): see :mod:`dspex.lm.events`. Metrics attach here too
(``dspex.observability.callbacks.PrometheusCallback``, installed by the workers).

A callback can stop hearing the calls made inside the one it is hearing (:func:`muted`): tracing
does so for an example it does not sample, so that the calls inside cost what they cost with no
callback installed. A callback can also take an evaluation's examples one by one before their
program runs (dspex extension :meth:`BaseCallback.examples_of`, found by :func:`example_hearing`):
tracing then decides an example is not sampled before announcing anything, and its program runs
as with tracing off.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import logging
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from dspex.lm.events import LMAttempt, LMRequest

__all__ = [
    "ACTIVE_CALL_ID",
    "BaseCallback",
    "ExampleHearing",
    "ExampleRunner",
    "example_hearing",
    "muted",
    "unmuted",
    "with_callbacks",
]

logger = logging.getLogger(__name__)

# The call id of the innermost instrumented call running here (a module's, an LM's...).
ACTIVE_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dspex_active_call_id", default=None
)

F = TypeVar("F", bound=Callable[..., Any])


def _bind_active_call_id(fn: F) -> F:
    """``fn`` bound to the callback call id active now, for calls made later in other threads (DSPy's
    helper of the same name: a worker thread's calls then nest under the call that started them)."""
    parent = ACTIVE_CALL_ID.get()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        token = ACTIVE_CALL_ID.set(parent)
        try:
            return fn(*args, **kwargs)
        finally:
            ACTIVE_CALL_ID.reset(token)

    return cast(F, bound)


class ExampleRunner(Protocol):
    """One worker's examples, run one after another, as a callback that takes them one by one
    hears them (what :meth:`ExampleHearing.running` gives)."""

    def begin(self) -> object | None:
        """An example's program is about to run: None when the callback does not want to hear its
        calls (they are then not announced to it), else a token for :meth:`end`."""
        ...

    def end(
        self, token: object | None, inputs: dict[str, Any], started: float, exception: BaseException | None
    ) -> None:
        """The program of the example :meth:`begin` gave ``token`` for ended (``started``: its
        ``time.perf_counter()`` at the start; ``exception``: what it raised). Called for a None
        token only when the program raised."""
        ...


class ExampleHearing(Protocol):
    """How a callback hears one evaluation's examples when it takes them one by one (what
    :meth:`BaseCallback.examples_of` returns)."""

    def running(self) -> AbstractContextManager[ExampleRunner]:
        """Around the examples one worker runs one after another (or the whole sequential run)."""
        ...


class BaseCallback:
    """Hooks called before and after modules, LMs, adapters, tools, evaluations, compiles and code
    interpreter executions and tool calls."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A module's forward is about to run with ``inputs``."""

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A module's forward returned ``outputs`` (None and ``exception`` when it raised)."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM is about to be called."""

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        """An LM call finished."""

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        """dspex extension: one HTTP attempt of an LM call ended (queue wait, duration, status)."""

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        """dspex extension: an LM call ended as a whole (duration, outcome, usage and cost)."""

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter is about to format a signature, demos and inputs into messages."""

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An adapter formatted its messages."""

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter is about to parse an LM answer."""

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An adapter parsed an LM answer."""

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A tool is about to run."""

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        """A tool returned."""

    def on_tool_breaker_state(self, service: str, state: str) -> None:
        """dspex extension: the circuit breaker of a tool service (ReActV2's tool runner; the tool's
        name unless its policy names a service) was made (``"closed"``) or changed state
        (``"open"``, ``"half_open"``, ``"closed"``)."""

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An evaluation is about to start."""

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An evaluation finished."""

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An optimizer's compile is about to start."""

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An optimizer's compile finished."""

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A code interpreter is about to run ``inputs["code"]`` (with ``inputs["variables"]``)."""

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An execution ended: its output (a ``FinalOutput`` after ``SUBMIT``) or the exception."""

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """Code in an interpreter called the host tool ``inputs["tool_name"]``."""

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A host tool called from an interpreter returned."""

    def on_interpreter_startup_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A code interpreter is about to start its session (DSPy's hook; sessions may start lazily)."""

    def on_interpreter_startup_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A code interpreter's session started (or failed to)."""

    def on_interpreter_shutdown_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A code interpreter is about to end its session."""

    def on_interpreter_shutdown_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A code interpreter's session ended."""

    def examples_of(self, program: Any) -> ExampleHearing | None:
        """dspex extension: asked by a local evaluation, while its own call is announced, before it
        runs ``program`` on its examples; an :class:`ExampleHearing` takes the examples one by one
        (tracing: each example's sampling decided before its program call is announced). None
        (the default): the examples' calls are announced as any call."""
        return None


def example_hearing(program: Any) -> ExampleHearing | None:
    """The first :meth:`BaseCallback.examples_of` answer of the callbacks in effect for ``program``
    (usually None: tracing off, or no callback taking examples one by one; the others hear the
    examples' calls as any call)."""
    for callback in active_callbacks(program):
        hearing = callback.examples_of(program)
        if hearing is not None:
            return hearing
    return None


def active_callbacks(instance: Any) -> list[BaseCallback]:
    """The callbacks in effect for ``instance``: the settings' (global, then context), then its own,
    without the one :func:`muted` here."""
    installed: list[BaseCallback] = _settings_reader()().callbacks
    own: Iterable[BaseCallback] = getattr(instance, "callbacks", None) or ()
    if own:
        installed = [*installed, *own]
    elif not installed:
        return _NONE
    # every module, adapter and LM call asks: no list built when the component has none of its
    # own (the settings' list is handed out as is; no caller changes what it is given)
    silenced = _MUTED.get()
    if silenced is None:
        return installed
    if len(installed) == 1:  # tracing alone, muted inside an unsampled example
        return _NONE if installed[0] is silenced else installed
    return _without(installed, silenced)


_NONE: list[BaseCallback] = []

# The callback the calls running here are not announced to: tracing's, inside an example it did not
# sample (see dspex.observability.tracing.callback). A context variable, so that it follows the
# example into the tasks and threads it starts and nowhere else.
_MUTED: contextvars.ContextVar[BaseCallback | None] = contextvars.ContextVar(
    "dspex_muted_callback", default=None
)


def muted(callback: BaseCallback | None) -> contextvars.Token[BaseCallback | None]:
    """From now on in this context, calls are not announced to ``callback`` (calls already started
    still end with it): for a callback with nothing to do inside the call it is hearing, it costs
    each of them one context-variable read instead of an announcement (None: every callback hears
    them again, inside a block that muted one). Undo with :func:`unmuted`."""
    return _MUTED.set(callback)


def unmuted(token: contextvars.Token[BaseCallback | None]) -> None:
    """Undo the :func:`muted` call that gave ``token`` (nothing if it was made in another context)."""
    try:  # noqa: SIM105  (contextlib.suppress would cost an object per example)
        _MUTED.reset(token)
    except ValueError:  # the context it was set in is gone
        pass


# The last list filtered, to hand out the same one again: a worker's settings hold its metrics
# callback beside tracing's, and an unsampled example's calls all ask.
_last_without: tuple[list[BaseCallback], BaseCallback, list[BaseCallback]] | None = None


def _without(callbacks: list[BaseCallback], silenced: BaseCallback) -> list[BaseCallback]:
    global _last_without
    last = _last_without
    if last is not None and last[0] is callbacks and last[1] is silenced:
        return last[2]
    kept = [callback for callback in callbacks if callback is not silenced] or _NONE
    _last_without = (callbacks, silenced, kept)
    return kept


_current_settings: Callable[[], Any] | None = None


def _settings_reader() -> Callable[[], Any]:
    # dspex.configuration imports this module: found on first use, then kept (every module, adapter
    # and LM call asks, and an import statement per call was most of what asking cost)
    global _current_settings
    if _current_settings is None:
        from dspex.configuration import current_settings

        _current_settings = current_settings
    return _current_settings


_LISTENS: dict[tuple[type, str], bool] = {}


def listening(callbacks: list[BaseCallback], kind: str) -> list[BaseCallback]:
    """The callbacks among ``callbacks`` that override ``on_<kind>_start`` or ``on_<kind>_end``.

    Workers install a metrics callback that hears LM attempts and tools only: without this filter
    every module, adapter and LM call of every task would bind its inputs and announce itself to
    hooks that do nothing (a measured tenth of a predictor's CPU).
    """
    if not callbacks:
        return _NONE
    if len(callbacks) == 1:  # the usual case (one tracing or metrics callback): no list built
        return callbacks if _listens(type(callbacks[0]), kind) else _NONE
    heard = [callback for callback in callbacks if _listens(type(callback), kind)]
    return heard if heard else _NONE


def _listens(cls: type, kind: str) -> bool:
    found = _LISTENS.get((cls, kind))
    if found is None:
        hooks = (f"on_{kind}_start", f"on_{kind}_end")
        found = any(getattr(cls, hook, None) is not getattr(BaseCallback, hook, None) for hook in hooks)
        _LISTENS[(cls, kind)] = found
    return found


def _kind_of(instance: Any, method: str) -> str:
    family = _family(type(instance))
    if family == "lm":
        return "lm"
    if family == "adapter":
        return "adapter_parse" if method == "parse" else "adapter_format"
    kind = getattr(instance, "callback_kind", None)
    if isinstance(kind, str) and kind != "interpreter":
        return kind
    hooks = _INTERPRETER_HOOKS.get(method)
    if hooks is not None and (kind == "interpreter" or _is_code_interpreter(instance)):
        return hooks
    return "module"


# Per class: "lm" (a BaseLM), "adapter" (an Adapter) or "" (neither), for the calls announced without
# a fixed kind: two import statements and isinstance checks per call measured 1.5 us.
_FAMILIES: dict[type, str] = {}


def _family(cls: type) -> str:
    family = _FAMILIES.get(cls)
    if family is None:
        from dspex.adapters.base import Adapter
        from dspex.lm.base import BaseLM

        family = "lm" if issubclass(cls, BaseLM) else "adapter" if issubclass(cls, Adapter) else ""
        _FAMILIES[cls] = family
    return family


# A code interpreter's methods and the hooks that hear them (DSPy's on_interpreter_* names).
_INTERPRETER_HOOKS = {
    "execute": "interpreter_execute",
    "invoke_tool": "interpreter_tool_call",
    "start": "interpreter_startup",
    "shutdown": "interpreter_shutdown",
}


def _is_code_interpreter(instance: Any) -> bool:
    from dspex.primitives.code_interpreter import CodeInterpreter

    return isinstance(instance, CodeInterpreter)


# Call ids as DSPy's (32 hex digits), unique per process run, without uuid4's system call per id:
# workers install callbacks, so every module and LM call of every task takes one.
_CALL_ID_PREFIX = uuid.uuid4().hex[:16]
_call_numbers = itertools.count()


def new_call_id() -> str:
    """A call id no other call of any process run shares (a random prefix and a counter)."""
    return f"{_CALL_ID_PREFIX}{next(_call_numbers):016x}"


_HOOK_NAMES: dict[str, tuple[str, str]] = {}


def _hook_names(kind: str) -> tuple[str, str]:
    # made once per kind, not formatted per announced call
    names = _HOOK_NAMES.get(kind)
    if names is None:
        names = _HOOK_NAMES[kind] = (f"on_{kind}_start", f"on_{kind}_end")
    return names


def notify_start(callbacks: list[BaseCallback], kind: str, instance: Any, inputs: dict[str, Any]) -> str:
    """Call every ``on_<kind>_start``; the call id to pass to :func:`notify_end`."""
    call_id = new_call_id()
    hook = _hook_names(kind)[0]
    for callback in callbacks:
        try:
            getattr(callback, hook)(call_id=call_id, instance=instance, inputs=inputs)
        except Exception:
            logger.warning("callback %r failed in on_%s_start", callback, kind, exc_info=True)
    return call_id


def notify_end(
    callbacks: list[BaseCallback], kind: str, call_id: str, outputs: Any, exception: BaseException | None
) -> None:
    """Call every ``on_<kind>_end`` (innermost semantics: in the order they were installed)."""
    hook = _hook_names(kind)[1]
    for callback in callbacks:
        try:
            getattr(callback, hook)(call_id=call_id, outputs=outputs, exception=exception)
        except Exception:
            logger.warning("callback %r failed in on_%s_end", callback, kind, exc_info=True)


def _bound_inputs(
    fn: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    plan = _binding(fn)
    if plan is not None:
        inputs = plan.bind(args, kwargs)
        if inputs is not None:
            return inputs
    signature = inspect.signature(fn)  # what the plan does not cover (*args, positional-only...)
    try:
        bound = signature.bind(instance, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    bound.apply_defaults()
    inputs = dict(bound.arguments)
    inputs.pop("self", None)
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in inputs:
            inputs.update(inputs.pop(name))
    return inputs


class _Binding:
    """How a method's arguments become the inputs callbacks hear, worked out once per method:
    every announced adapter format and parse binds its inputs, and ``inspect.Signature.bind`` per
    call was most of what announcing them cost."""

    __slots__ = ("defaults", "extra", "keyword", "positional")

    def __init__(self, signature: inspect.Signature) -> None:
        parameters = list(signature.parameters.values())[1:]  # without self
        kinds = inspect.Parameter
        self.positional = tuple(p.name for p in parameters if p.kind is kinds.POSITIONAL_OR_KEYWORD)
        self.keyword = tuple(p.name for p in parameters if p.kind is kinds.KEYWORD_ONLY)
        self.defaults = {p.name: p.default for p in parameters if p.default is not kinds.empty}
        self.extra = any(p.kind is kinds.VAR_KEYWORD for p in parameters)  # **kwargs

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The inputs in parameter order (``**kwargs`` spread at the end, as the signature's
        binding gives them); None when the call does not fit (the slow path then decides)."""
        given = len(args)
        if given > len(self.positional):
            return None
        inputs = dict(zip(self.positional, args, strict=False))
        if not kwargs and given == len(self.positional) and not self.keyword:
            return inputs  # all given by position (how adapters call format and parse)
        matched = 0
        for name in (*self.positional[given:], *self.keyword):
            if name in kwargs:
                inputs[name] = kwargs[name]
                matched += 1
            elif name in self.defaults:
                inputs[name] = self.defaults[name]
            else:
                return None  # a required argument is missing: a TypeError to come
        if matched == len(kwargs):
            return inputs
        if not self.extra:
            return None  # a keyword no parameter takes, or a positional one given twice
        for name, value in kwargs.items():
            if name in self.positional[:given]:
                return None
            inputs.setdefault(name, value)
        return inputs


@functools.lru_cache(maxsize=1024)
def _binding(fn: Callable[..., Any]) -> _Binding | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    kinds = inspect.Parameter
    if not parameters or any(p.kind in (kinds.POSITIONAL_ONLY, kinds.VAR_POSITIONAL) for p in parameters):
        return None
    return _Binding(signature)


class _Announced:
    """One call the callbacks hear about: ``on_<kind>_start`` on entry (with this call's id as
    ``ACTIVE_CALL_ID`` inside), ``on_<kind>_end`` on exit with ``result`` or the exception."""

    __slots__ = ("call_id", "callbacks", "kind", "nested_token", "result", "token")

    def __init__(
        self, callbacks: list[BaseCallback], kind: str, instance: Any, inputs: dict[str, Any]
    ) -> None:
        self.callbacks, self.kind, self.result = callbacks, kind, None
        self.nested_token: contextvars.Token[tuple[int, str] | None] | None = None
        self.call_id = notify_start(callbacks, kind, instance, inputs)
        self.token = ACTIVE_CALL_ID.set(self.call_id)

    def __enter__(self) -> _Announced:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if self.nested_token is not None:
            _ANNOUNCING.reset(self.nested_token)
        if exc is not None:
            notify_end(self.callbacks, self.kind, self.call_id, None, exc)
            ACTIVE_CALL_ID.reset(self.token)
        else:
            ACTIVE_CALL_ID.reset(self.token)
            notify_end(self.callbacks, self.kind, self.call_id, self.result, None)


# The (instance, method) an ``outermost_only`` method is being announced for: its overrides reach
# each other through super(), and the callbacks should hear one call, not one per class.
_ANNOUNCING: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "dspex_announcing", default=None
)


def with_callbacks(fn: F, *, kind: str | None = None, outermost_only: bool = False) -> F:
    """Decorate a method so the active callbacks hear its start and end (sync or async).

    ``kind`` names the hooks (``on_<kind>_start``) when every caller's is the same (the adapters'
    hot path then skips finding it per call); ``outermost_only``: a call made from inside the same
    method of the same instance (an override calling ``super().parse(...)``) is not announced again.
    """
    # The wrappers name only module-level functions: cloudpickle copies a wrapper by value (it
    # carries the wrapped function's name), and a context variable it reached would not pickle.
    fixed_kind = kind

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
            announced = _announce(fn, fixed_kind, outermost_only, instance, args, kwargs)
            if announced is None:
                return await fn(instance, *args, **kwargs)
            with announced:
                announced.result = await fn(instance, *args, **kwargs)
            return announced.result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def sync_wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
        announced = _announce(fn, fixed_kind, outermost_only, instance, args, kwargs)
        if announced is None:
            return fn(instance, *args, **kwargs)
        with announced:
            announced.result = fn(instance, *args, **kwargs)
        return announced.result

    return sync_wrapper  # type: ignore[return-value]


def _announce(
    fn: Callable[..., Any],
    fixed_kind: str | None,
    outermost_only: bool,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> _Announced | None:
    """The announced call of ``fn`` on ``instance``, or None when no callback listens."""
    callbacks = active_callbacks(instance)
    if not callbacks:
        return None
    kind = fixed_kind or _kind_of(instance, fn.__name__)
    callbacks = listening(callbacks, kind)
    if not callbacks:
        return None
    if not outermost_only:
        return _Announced(callbacks, kind, instance, _bound_inputs(fn, instance, args, kwargs))
    key = (id(instance), fn.__name__)
    if _ANNOUNCING.get() == key:
        return None
    announced = _Announced(callbacks, kind, instance, _bound_inputs(fn, instance, args, kwargs))
    announced.nested_token = _ANNOUNCING.set(key)
    return announced
