"""Optimizers by name, for the CLI and cluster jobs: ``--optimizer bootstrap-rs`` or DSPy's class name.

    optimizer = optimizer_from_name("bootstrap-rs", metric="numeric_equal:answer", num_candidate_programs=8)

An unknown name or knob is a ConfigurationError, raised before anything runs.
"""

from __future__ import annotations

from typing import Any

from dspex.errors import ConfigurationError
from dspex.optimizers._base import Optimizer
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.copro import COPRO
from dspex.optimizers.ensemble import Ensemble
from dspex.optimizers.knn import KNNFewShot
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.simba import SIMBA

__all__ = ["OPTIMIZERS", "optimizer_class", "optimizer_from_name"]

# short name (CLI) -> class; DSPy's class names are accepted too
OPTIMIZERS: dict[str, type[Optimizer]] = {
    "labeled": LabeledFewShot,
    "bootstrap": BootstrapFewShot,
    "bootstrap-rs": BootstrapFewShotWithRandomSearch,
    "knn": KNNFewShot,
    "ensemble": Ensemble,
    "simba": SIMBA,
    "copro": COPRO,
    "mipro": MIPROv2,
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class called ``name`` (short name or DSPy's class name)."""
    cls = OPTIMIZERS.get(name) or _BY_CLASS_NAME.get(name)
    if cls is None:
        known = ", ".join([*OPTIMIZERS, *_BY_CLASS_NAME])
        raise ConfigurationError(f"unknown optimizer {name!r}; known: {known}")
    return cls


def optimizer_from_name(name: str, **knobs: Any) -> Optimizer:
    """An optimizer built from its name and knobs (unknown knobs: ConfigurationError naming them)."""
    return optimizer_class(name)(**knobs)
