"""The callbacks a worker installs in the programs it runs.

Every worker installs :class:`~dspex.observability.callbacks.PrometheusCallback` (the LM metrics);
a predictor started with ``--callback pkg.mod:Name`` (repeatable) also installs that user callback,
imported under the worker's ``--allow-module`` allow-list like a job's program, and records its
events into each prediction's result (:mod:`dspex.observability.recorder`).

``Name`` is a :class:`~dspex.utils.BaseCallback` subclass (built with no arguments) or an instance
of one defined at module level.

    >>> load_callbacks(["mypkg.callbacks:Timing"], SecurityPolicy(allow_modules=["mypkg"]))
    [RecordedCallback(mypkg.callbacks:Timing)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.observability.callbacks import PrometheusCallback
from dspex.observability.recorder import RecordedCallback
from dspex.processors.security import SecurityPolicy
from dspex.serialization import import_object
from dspex.utils.callback import BaseCallback

__all__ = ["check_callback_path", "load_callbacks", "worker_callbacks"]


def check_callback_path(path: str) -> str:
    """``path`` when it looks like ``pkg.mod:Name``; ConfigurationError saying the form otherwise."""
    module, sep, name = path.partition(":")
    parts = [*module.split("."), *name.split(".")]
    if not sep or not all(part.isidentifier() for part in parts):
        raise ConfigurationError(
            f"--callback needs an import path like 'mypkg.callbacks:Timing', got {path!r}"
        )
    return path


def load_callbacks(paths: Iterable[str], policy: SecurityPolicy) -> list[RecordedCallback]:
    """The user callbacks named by ``paths``, each wrapped so its events are recorded.

    A module outside the policy's allowed modules is a SecurityPolicyError; a path that does not
    import, or names something other than a BaseCallback, a ConfigurationError naming it.
    """
    return [RecordedCallback(_build(path, policy), path) for path in paths]


def worker_callbacks(paths: Iterable[str], policy: SecurityPolicy) -> list[Any]:
    """What a worker installs: the Prometheus callback, then the user callbacks of ``paths``."""
    return [PrometheusCallback(), *load_callbacks(paths, policy)]


def _build(path: str, policy: SecurityPolicy) -> BaseCallback:
    try:
        found = import_object(check_callback_path(path), allow_modules=policy.modules, what="callback")
    except ProgramLoadError as exc:
        raise ConfigurationError(f"--callback {path}: {exc}") from exc
    if isinstance(found, type) and issubclass(found, BaseCallback):
        try:
            return found()
        except TypeError as exc:
            raise ConfigurationError(
                f"--callback {path}: the class must be built with no arguments ({exc}); "
                "or name a module-level instance"
            ) from exc
    if isinstance(found, BaseCallback):
        return found
    raise ConfigurationError(
        f"--callback {path} is a {type(found).__name__}, not a dspex.utils.BaseCallback subclass or instance"
    )
