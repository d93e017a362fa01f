"""The built-in modules: :class:`Predict`, :class:`ChainOfThought`, :class:`ReAct`,
:class:`MultiChainComparison`, :class:`BestOfN`, :class:`Refine`, :class:`Parallel`, :class:`RLM`,
and :func:`majority`."""

from __future__ import annotations

from dspex.modules.aggregation import majority
from dspex.modules.best_of_n import BestOfN
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.code_act import CodeAct
from dspex.modules.multi_chain_comparison import MultiChainComparison
from dspex.modules.parallel import Parallel
from dspex.modules.predict import Predict
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.modules.react import ReAct, Tool
from dspex.modules.react_v2 import ReActV2, ToolPolicy, tool_policy
from dspex.modules.refine import Refine
from dspex.modules.rlm import RLM

__all__ = [
    "RLM",
    "BestOfN",
    "ChainOfThought",
    "CodeAct",
    "MultiChainComparison",
    "Parallel",
    "Predict",
    "ProgramOfThought",
    "ReAct",
    "ReActV2",
    "Refine",
    "Tool",
    "ToolPolicy",
    "majority",
    "tool_policy",
]


def __getattr__(name: str) -> object:
    # DSPy's ``from dspy.predict import KNN``: KNN lives with the optimizers, which import this
    # package, so it is loaded on first use rather than at import (no import cycle).
    if name == "KNN":
        from dspex.optimizers.knn import KNN

        return KNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
