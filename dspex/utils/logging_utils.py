"""DSPy's logging switches: ``enable_logging`` / ``disable_logging`` turn dspex's own log output
on and off, ``configure_dspy_loggers(name)`` gives a logger tree a stderr handler of its own (as
DSPy does for ``dspy`` at import; dspex, a library, installs none unless asked), and
``enable_litellm_logging`` / ``disable_litellm_logging`` are kept for DSPy code that calls them
(dspex does not use LiteLLM, so there is nothing for them to switch).
"""

from __future__ import annotations

import logging
import sys

__all__ = [
    "configure_dspy_loggers",
    "disable_litellm_logging",
    "disable_logging",
    "enable_litellm_logging",
    "enable_logging",
]

_LOGGER = logging.getLogger("dspex")
_SILENT = logging.CRITICAL + 1
_HANDLER_NAME = "dspex_handler"
_LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"
_level_before_disabled: int | None = None


def disable_logging() -> None:
    """Silence every dspex logger (warnings included) until :func:`enable_logging`.

    The ``dspex`` logger's level is raised above CRITICAL: its children (``dspex.lm.client``...)
    take their level from it, so their records are dropped before any handler sees them."""
    global _level_before_disabled
    if _level_before_disabled is None:
        _level_before_disabled = _LOGGER.level
    _LOGGER.setLevel(_SILENT)


def enable_logging() -> None:
    """Undo :func:`disable_logging` (the ``dspex`` logger gets its level back)."""
    global _level_before_disabled
    if _level_before_disabled is not None:
        _LOGGER.setLevel(_level_before_disabled)
        _level_before_disabled = None


def configure_dspy_loggers(root_module_name: str) -> None:
    """Give logger ``root_module_name`` one stderr handler (DSPy's line format) at INFO, not
    propagating to the root logger; calling it again replaces that handler, not adds another."""
    logger = logging.getLogger(root_module_name)
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(fmt=_LINE_FORMAT, datefmt=_DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def enable_litellm_logging() -> None:
    """Nothing to do: dspex talks to providers without LiteLLM (kept for DSPy code)."""


def disable_litellm_logging() -> None:
    """Nothing to do: dspex talks to providers without LiteLLM (kept for DSPy code)."""
