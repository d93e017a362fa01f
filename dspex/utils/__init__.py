"""DSPy's ``dspy.utils``: the scripted test LM, a toy vectorizer, callbacks.

from dspex.utils import DummyLM
dspex.configure(lm=DummyLM([{"answer": "4"}]))
"""

from __future__ import annotations

from dspex import errors as exceptions  # DSPy's `dspy.utils.exceptions`
from dspex.utils.asyncify import asyncify, syncify
from dspex.utils.callback import BaseCallback, with_callbacks
from dspex.utils.dummies import DummyLM, DummyVectorizer, dummy_rm
from dspex.utils.logging_utils import (
    configure_dspy_loggers,
    disable_litellm_logging,
    disable_logging,
    enable_litellm_logging,
    enable_logging,
)

__all__ = [
    "BaseCallback",
    "DummyLM",
    "DummyVectorizer",
    "asyncify",
    "configure_dspy_loggers",
    "disable_litellm_logging",
    "disable_logging",
    "dummy_rm",
    "enable_litellm_logging",
    "enable_logging",
    "exceptions",
    "syncify",
    "with_callbacks",
]
