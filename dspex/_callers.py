"""The modules whose calls are in progress here, outermost first (DSPy's ``caller_modules``).

``Module.acall`` pushes itself for the duration of its call; an LM call records its history line on
every module in the chain (``module.history``), as DSPy does. A ``contextvars`` variable, so that
concurrent calls never see each other's callers. Nothing here imports the rest of dspex.
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["CALLER_MODULES"]

CALLER_MODULES: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "dspex_caller_modules", default=()
)
