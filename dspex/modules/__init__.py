"""The built-in modules: :class:`Predict`, :class:`ChainOfThought`, :class:`ReAct`,
:class:`MultiChainComparison`, :class:`BestOfN`, :class:`Refine`, :class:`Parallel`, and :func:`majority`."""

from __future__ import annotations

from dspex.modules.aggregation import majority
from dspex.modules.best_of_n import BestOfN
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.multi_chain_comparison import MultiChainComparison
from dspex.modules.parallel import Parallel
from dspex.modules.predict import Predict
from dspex.modules.react import ReAct, Tool
from dspex.modules.refine import Refine

__all__ = [
    "BestOfN",
    "ChainOfThought",
    "MultiChainComparison",
    "Parallel",
    "Predict",
    "ReAct",
    "Refine",
    "Tool",
    "majority",
]


def __getattr__(name: str) -> object:
    # DSPy's ``from dspy.predict import KNN``: KNN lives with the optimizers, which import this
    # package, so it is loaded on first use rather than at import (no import cycle).
    if name == "KNN":
        from dspex.optimizers.knn import KNN

        return KNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
