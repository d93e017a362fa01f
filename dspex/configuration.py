"""Process defaults and per-task overrides: DSPy's settings, on ``contextvars``.

``configure(...)`` sets the process defaults; ``with context(...)`` overrides some of them for the
code inside the block, through a ``contextvars`` variable, so an override in one asyncio task or thread
is never seen by another. Both take DSPy's setting names as explicit keywords (an unknown name is an
error naming the valid ones)::

    dspex.configure(lm=dspex.LM("openai/gpt-4o-mini"), track_usage=True)
    with dspex.context(lm=other_lm, callbacks=[MyCallback()]):
        await program.acall(question="...")      # uses other_lm; tasks outside the block do not

``dspex.settings`` is DSPy's settings object: ``dspex.settings.lm``, ``dspex.settings.configure(...)``,
``with dspex.settings.context(...)``. Unlike DSPy, any thread may call ``configure`` (the defaults are
swapped whole under a lock), and ``context`` blocks need no special executor to reach worker threads:
dspex's own thread hops copy the context.

A module's own ``lm`` (and an ``lm=`` passed to a call) wins over both.
"""

from __future__ import annotations

import contextvars
import enum
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
from types import ModuleType
from typing import Any, Final, cast

from dspex._settings_file import load_settings, save_settings
from dspex.adapters import Adapter
from dspex.errors import ConfigurationError
from dspex.lm.base import BaseLM
from dspex.lm.usage import UsageTracker, current_usage_tracker, track_usage

__all__ = [
    "ACCEPTED_SETTINGS",
    "Settings",
    "SettingsObject",
    "configure",
    "context",
    "current_settings",
    "settings",
]


class _Unset(enum.Enum):
    # A keyword left out, as opposed to one given as None (which clears the setting).
    UNSET = "unset"


_UNSET: Final = _Unset.UNSET


@dataclass(frozen=True)
class Settings:
    """The settings in effect. Names, meanings and defaults are DSPy 3.4.1's."""

    lm: BaseLM | None = None
    adapter: Adapter | None = None
    rm: Any = None
    # DSPy's trace: a list that every predictor call appends (predictor, inputs, prediction) to; None off
    trace: list[Any] | None = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    async_max_workers: int = 8
    send_stream: Any = None
    disable_history: bool = False
    track_usage: bool = False
    usage_tracker: Any = None
    caller_predict: Any = None
    caller_modules: Any = None
    stream_listeners: list[Any] = field(default_factory=list)
    provide_traceback: bool = False
    num_threads: int = 8
    max_errors: int = 10
    allow_tool_async_sync_conversion: bool = False
    max_history_size: int = 10_000
    max_trace_size: int = 10_000
    warn_on_type_mismatch: bool = True
    interpreter_factory: Any = None
    branch_idx: int = 0
    # DSPy's switch for experimental features; dspex reads it nowhere, but programs set it.
    experimental: bool = False
    # dspex: OpenTelemetry tracing of this process (dspex.observability.tracing); None: off.
    # configure() only, as a URL, True (the OTEL_* variables) or a TracingSettings.
    tracing: Any = None
    # dspex: MLflow runs of this process's evaluations and compiles (dspex.tracking); None: off.
    # configure() only, as a tracking URI, True (MLFLOW_TRACKING_URI) or an MlflowSettings.
    mlflow: Any = None


ACCEPTED_SETTINGS: Final = tuple(f.name for f in fields(Settings))
_EXPECTED_TYPES: Final[Mapping[str, type | tuple[type, ...]]] = {
    # A BaseLM for modules; any callable is kept, as DSPy keeps it (RLM's sub-LM may be a function).
    "lm": (BaseLM, cast(type, Callable)),
    "adapter": Adapter,
    "callbacks": list,
    "num_threads": int,
    "max_errors": int,
    "max_trace_size": int,
    "max_history_size": int,
    "async_max_workers": int,
    "disable_history": bool,
    "track_usage": bool,
    "provide_traceback": bool,
    "warn_on_type_mismatch": bool,
    "allow_tool_async_sync_conversion": bool,
}

_defaults = Settings()
_defaults_version = 0  # bumped by every configure(): a context's merged view is stale after one
_defaults_lock = threading.Lock()


class _Overrides:
    """The keys a ``context()`` block set, and its merge over the defaults (kept until the next
    ``configure()``, so a later ``configure()`` still shows through for the keys the block left alone).
    Every module and LM call reads the settings: the merge is done once per block, not per read."""

    __slots__ = ("merged", "values", "version")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self.merged: Settings | None = None
        self.version = -1


_overrides: contextvars.ContextVar[_Overrides | None] = contextvars.ContextVar(
    "dspex_settings_overrides", default=None
)


def configure(**kwargs: Any) -> None:
    """Set the process-wide defaults. Settings left out keep their value; ``None`` clears one.

    >>> dspex.configure(lm=dspex.LM("openai/gpt-4o-mini"), adapter=dspex.JSONAdapter())
    """
    given = _checked("configure", kwargs)
    global _defaults, _defaults_version
    if "tracing" in given:  # process-wide: a provider and the callback that feeds it
        from dspex.observability.tracing import with_setting

        given["tracing"], given["callbacks"] = with_setting(
            given.get("callbacks", _defaults.callbacks), given["tracing"]
        )
    if "mlflow" in given:  # process-wide too: a checked tracking server and the callback that logs
        from dspex.tracking import with_setting as with_mlflow

        given["mlflow"], given["callbacks"] = with_mlflow(
            given.get("callbacks", _defaults.callbacks), given["mlflow"]
        )
    with _defaults_lock:
        _defaults = replace(_defaults, **given)
        _defaults_version += 1


@contextmanager
def context(**kwargs: Any) -> Iterator[Settings]:
    """Override settings for the code inside the block (this task or thread only).

    >>> with dspex.context(lm=cheap_lm):
    ...     pred = qa(question="What is 2 + 3?")
    """
    given = _checked("context", kwargs)
    if "tracing" in given:
        raise ConfigurationError("tracing is process-wide: set it with dspex.configure(tracing=...)")
    if "mlflow" in given:
        raise ConfigurationError("mlflow is process-wide: set it with dspex.configure(mlflow=...)")
    outer = _overrides.get()
    token = _overrides.set(_Overrides({**(outer.values if outer else {}), **given}))
    tracker = given.get("usage_tracker")
    # DSPy's LMs report to settings.usage_tracker: here, a tracker given to a block is opened in it
    if isinstance(tracker, UsageTracker):
        tracker.by_model = True
    tracking: AbstractContextManager[object] = (
        track_usage(tracker) if isinstance(tracker, UsageTracker) else nullcontext()
    )
    try:
        with tracking:
            yield current_settings()
    finally:
        _overrides.reset(token)


def current_settings() -> Settings:
    """The settings in effect here: process defaults with this context's overrides on top."""
    overrides = _overrides.get()
    if overrides is None:
        return _defaults
    merged, version = overrides.merged, _defaults_version
    if merged is None or overrides.version != version:
        # a benign race: two threads may both merge; both results are the same settings
        merged = overrides.merged = _merged(_defaults, overrides.values)
        overrides.version = version
    return merged


def call_usage_tracker() -> tuple[UsageTracker, bool]:
    """The tracker a module call opens, and whether its prediction gets DSPy's per-model usage
    (``get_lm_usage()``): with ``track_usage`` on and no per-model tracker open around the call, as
    in DSPy, so only the outermost module's prediction carries it."""
    wanted = current_settings().track_usage and current_usage_tracker() is None
    return UsageTracker(by_model=wanted), wanted


def _merged(defaults: Settings, values: Mapping[str, Any]) -> Settings:
    """``replace(defaults, **values)`` without re-running the dataclass constructor: every module
    and task opens a context, and the values were checked when it was opened (8x faster)."""
    merged = object.__new__(Settings)
    merged.__dict__.update(defaults.__dict__)
    merged.__dict__.update(values)
    return merged


def reset_settings() -> None:
    """Back to DSPy's defaults (for tests): the process defaults and this context's overrides."""
    global _defaults, _defaults_version
    with _defaults_lock:
        _defaults = Settings()
        _defaults_version += 1
    _overrides.set(None)


_ACCEPTED: Final = frozenset(ACCEPTED_SETTINGS)


def _checked(where: str, values: Mapping[str, Any]) -> dict[str, Any]:
    if values.keys() <= _ACCEPTED:  # nearly always: no set to build
        unknown: list[str] = []
    else:
        unknown = sorted(values.keys() - _ACCEPTED)
    if unknown:
        raise ConfigurationError(
            f"{where}() got unknown setting(s): {', '.join(unknown)}; "
            f"accepted: {', '.join(ACCEPTED_SETTINGS)}"
        )
    given = {name: value for name, value in values.items() if value is not _UNSET}
    for name, value in given.items():
        expected = _EXPECTED_TYPES.get(name)
        if expected is not None and value is not None and not isinstance(value, expected):
            wanted = " or ".join(
                _type_name(t) for t in (expected if isinstance(expected, tuple) else (expected,))
            )
            article = "an" if wanted[0] in "aeiou" else "a"
            raise ConfigurationError(
                f"{where}({name}=...) needs {article} {wanted} or None, "
                f"got {type(value).__module__}.{type(value).__qualname__}"
            )
    return given


def _type_name(kind: type) -> str:
    return f"dspex.{kind.__name__}" if kind.__module__.startswith("dspex") else kind.__name__


# What calls in progress keep in the settings (the trace they append to, the open usage tracker, the
# calling predictor and modules, a stream being sent): state, not configuration, so never saved.
_CALL_STATE: Final = frozenset(
    {"trace", "usage_tracker", "caller_predict", "caller_modules", "send_stream", "stream_listeners"}
)


class SettingsObject:
    """DSPy's ``dspy.settings``: read any setting as an attribute, change them with ``configure``.

    >>> dspex.settings.lm
    >>> with dspex.settings.context(trace=[]): ...
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name == "usage_tracker":
            return _usage_tracker()
        if name in ACCEPTED_SETTINGS:
            return getattr(current_settings(), name)
        raise AttributeError(
            f"dspex.settings has no setting {name!r}; settings: {', '.join(ACCEPTED_SETTINGS)}"
        )

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def __contains__(self, name: object) -> bool:
        return name in ACCEPTED_SETTINGS

    def __setattr__(self, name: str, value: Any) -> None:
        configure(**{name: value})

    def get(self, name: str, default: Any = None) -> Any:
        if name == "usage_tracker":
            return _usage_tracker()
        return getattr(current_settings(), name, default)

    def copy(self) -> dict[str, Any]:
        """The settings in effect here, as a dict."""
        current = current_settings()
        values = {name: getattr(current, name) for name in ACCEPTED_SETTINGS}
        values["usage_tracker"] = _usage_tracker()
        return values

    @property
    def config(self) -> dict[str, Any]:
        return self.copy()

    @property
    def lock(self) -> threading.Lock:
        return _defaults_lock

    configure = staticmethod(configure)
    context = staticmethod(context)

    def save(
        self,
        path: str | os.PathLike[str],
        modules_to_serialize: list[ModuleType] | None = None,
        exclude_keys: list[str] | None = None,
    ) -> None:
        """DSPy's ``settings.save``: pickle the settings in effect here (cloudpickle) to ``path``.
        ``modules_to_serialize``' code is stored by value; ``exclude_keys`` are left out, and so is
        the state of calls in progress (``trace``, ``usage_tracker``, ...). API keys are never
        written (an LM pickles its settings only). Read it back with ``dspex.load_settings``."""
        current = current_settings()
        values = {name: getattr(current, name) for name in ACCEPTED_SETTINGS if name not in _CALL_STATE}
        save_settings(values, path, modules_to_serialize, exclude_keys)

    load = staticmethod(load_settings)

    def __repr__(self) -> str:
        return f"dspex.settings({current_settings()!r})"


def _usage_tracker() -> Any:
    """DSPy's ``settings.usage_tracker``: the innermost tracker open here (``track_usage()``, a
    module call under ``track_usage=True``), else the value set with ``configure``/``context``."""
    tracker = current_usage_tracker()
    return tracker if tracker is not None else current_settings().usage_tracker


settings = SettingsObject()
