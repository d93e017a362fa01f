"""Process defaults and per-task overrides for the LM and the adapter modules use.

``configure(...)`` sets the process defaults; ``with context(...)`` overrides some of them for the
code inside the block, through a ``contextvars`` variable, so an override in one asyncio task or thread
is never seen by another. Both take explicit keyword arguments only::

    dspex.configure(lm=dspex.LM("openai/gpt-4o-mini"))
    with dspex.context(lm=other_lm):
        await program.acall(question="...")      # uses other_lm; tasks outside the block do not

A module's own ``lm`` (and an ``lm=`` passed to a call) wins over both.
"""

from __future__ import annotations

import contextvars
import enum
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final

from dspex.adapters import Adapter
from dspex.errors import ConfigurationError
from dspex.lm import LM

__all__ = ["ACCEPTED_SETTINGS", "Settings", "configure", "context", "current_settings"]


class _Unset(enum.Enum):
    # A keyword left out, as opposed to one given as None (which clears the setting).
    UNSET = "unset"


_UNSET: Final = _Unset.UNSET

ACCEPTED_SETTINGS: Final = ("lm", "adapter")
_EXPECTED_TYPES: Final[Mapping[str, type]] = {"lm": LM, "adapter": Adapter}


@dataclass(frozen=True)
class Settings:
    """The settings in effect: the LM and adapter that modules without their own use."""

    lm: LM | None = None
    adapter: Adapter | None = None


_defaults = Settings()
_defaults_lock = threading.Lock()
# Only the keys a `context()` block set; merged over the process defaults on every read, so a later
# `configure()` still shows through for the settings a block did not override.
_overrides: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "dspex_settings_overrides", default=None
)


def configure(
    *, lm: LM | _Unset | None = _UNSET, adapter: Adapter | _Unset | None = _UNSET, **unknown: Any
) -> None:
    """Set the process-wide defaults. Keywords left out keep their value; ``None`` clears one.

    >>> dspex.configure(lm=dspex.LM("openai/gpt-4o-mini"), adapter=dspex.JSONAdapter())
    """
    given = _checked("configure", {"lm": lm, "adapter": adapter}, unknown)
    global _defaults
    with _defaults_lock:
        _defaults = replace(_defaults, **given)


@contextmanager
def context(
    *, lm: LM | _Unset | None = _UNSET, adapter: Adapter | _Unset | None = _UNSET, **unknown: Any
) -> Iterator[Settings]:
    """Override settings for the code inside the block (this task or thread only).

    >>> with dspex.context(lm=cheap_lm):
    ...     pred = qa(question="What is 2 + 3?")
    """
    given = _checked("context", {"lm": lm, "adapter": adapter}, unknown)
    token = _overrides.set({**(_overrides.get() or {}), **given})
    try:
        yield current_settings()
    finally:
        _overrides.reset(token)


def current_settings() -> Settings:
    """The settings in effect here: process defaults with this context's overrides on top."""
    overrides = _overrides.get()
    return replace(_defaults, **overrides) if overrides else _defaults


def _checked(where: str, values: Mapping[str, Any], unknown: Mapping[str, Any]) -> dict[str, Any]:
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigurationError(
            f"{where}() got unknown setting(s): {names}; accepted: {', '.join(ACCEPTED_SETTINGS)}"
        )
    given = {name: value for name, value in values.items() if value is not _UNSET}
    for name, value in given.items():
        expected = _EXPECTED_TYPES[name]
        if value is not None and not isinstance(value, expected):
            raise ConfigurationError(
                f"{where}({name}=...) needs a dspex.{expected.__name__} or None, "
                f"got {type(value).__module__}.{type(value).__qualname__}"
            )
    return given
