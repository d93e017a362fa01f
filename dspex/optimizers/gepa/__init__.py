"""GEPA (reflective prompt evolution, Agrawal et al. 2025) on the ``gepa`` package.

    from dspex.optimizers.gepa import GEPA, InstructionProposer

:mod:`.gepa` holds the optimizer, :mod:`.run` its step-by-step run, :mod:`.engine` gepa's engine
driven one iteration per step (and why), :mod:`.checkpoint` the run's versioned JSON state,
:mod:`.adapter` gepa's adapter over dspex programs (and the memo of runs it reuses),
:mod:`.prefetch` the next iterations' parent minibatches run ahead, :mod:`.feedback` the
feedback-metric contract,
:mod:`.proposer` the instruction proposers, :mod:`.result` ``DspyGEPAResult`` and :mod:`.budgets`
the metric-call and LM-call / USD budgets. DSPy code reaches them as
``dspex.teleprompt.gepa`` (``.gepa``, ``.gepa_utils``, ``.instruction_proposal``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dspex.optimizers.gepa.adapter import DspyAdapter
from dspex.optimizers.gepa.budgets import AUTO_RUN_SETTINGS
from dspex.optimizers.gepa.feedback import FeedbackMetricError, GEPAFeedbackMetric, ScoreWithFeedback
from dspex.optimizers.gepa.gepa import GEPA, DspyGEPAResult
from dspex.optimizers.gepa.proposer import (
    InstructionProposer,
    MultiModalInstructionProposer,
    ReflectionParseError,
    ReflectiveExample,
)

__all__ = [
    "AUTO_RUN_SETTINGS",
    "GEPA",
    "DspyAdapter",
    "DspyGEPAResult",
    "FeedbackMetricError",
    "GEPAFeedbackMetric",
    "InstructionProposer",
    "MultiModalInstructionProposer",
    "ReflectionParseError",
    "ReflectiveExample",
    "ScoreWithFeedback",
]

# DSPy's submodule names under dspex.teleprompt.gepa (see dspex._dspy_paths): ``from
# dspex.teleprompt.gepa import gepa_utils`` looks for an attribute first, so it is answered here.
_DSPY_SUBMODULES = frozenset({"gepa_utils", "gepa_flex_utils", "instruction_proposal"})


def __getattr__(name: str) -> ModuleType:
    if name in _DSPY_SUBMODULES:
        return importlib.import_module(f"dspex.teleprompt.gepa.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
