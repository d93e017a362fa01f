"""DSPy's ``enable_logging`` / ``disable_logging``: switch dspex's own log output on and off."""

from __future__ import annotations

import logging

__all__ = ["disable_logging", "enable_logging"]

_LOGGER = logging.getLogger("dspex")


def disable_logging() -> None:
    """Silence every dspex logger (warnings included) until :func:`enable_logging`."""
    _LOGGER.disabled = True


def enable_logging() -> None:
    """Undo :func:`disable_logging`."""
    _LOGGER.disabled = False
