"""Optimizers by name, for the CLI and cluster jobs: ``--optimizer bootstrap-rs`` or DSPy's class name.

    optimizer = optimizer_from_name("bootstrap-rs", metric="numeric_equal:answer", num_candidate_programs=8)

An unknown name or knob is a ConfigurationError, raised before anything runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from dspex.errors import ConfigurationError
from dspex.optimizers._base import Optimizer
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.copro import COPRO
from dspex.optimizers.ensemble import Ensemble
from dspex.optimizers.finetune import BootstrapFinetune
from dspex.optimizers.gepa import GEPA
from dspex.optimizers.knn import KNNFewShot
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.simba import SIMBA

__all__ = [
    "OPTIMIZERS",
    "check_compile_options",
    "cluster_optimizer",
    "optimizer_class",
    "optimizer_from_name",
    "start_options",
]

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
    "gepa": GEPA,
    "bootstrap-finetune": BootstrapFinetune,
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


def cluster_optimizer(name: str, knobs: Mapping[str, Any], offered: Mapping[str, Any]) -> Optimizer:
    """The optimizer of a cluster job: the job's ``offered`` values (metric, seed, limits) where its
    constructor takes them, the knobs over them. ConfigurationError for an unknown name or knob, and
    for an optimizer without a step-by-step run to checkpoint (``start``)."""
    cls = optimizer_class(name)
    if not callable(getattr(cls, "start", None)):
        raise ConfigurationError(
            f"{cls.__name__} cannot run as a cluster optimization: it has no step-by-step run to "
            "checkpoint (KNNFewShot's program picks its demos on every call, Ensemble combines "
            "programs you already have); compile it in your own process"
        )
    accepted = inspect.signature(cls.__init__).parameters
    given = {key: value for key, value in offered.items() if key in accepted and value is not None}
    return cls(**{**given, **dict(knobs)})


# What the worker itself passes to ``start``: a job's compile options cannot name these.
_RUN_ARGUMENTS = frozenset({"student", "trainset", "valset", "teacher", "executor", "state", "metric"})


def check_compile_options(optimizer: Optimizer, options: Mapping[str, Any]) -> None:
    """ConfigurationError unless every name of ``options`` is a keyword of the optimizer's compile
    (``start``) that a cluster job may set; the values are checked by ``start`` itself."""
    params = inspect.signature(optimizer.start).parameters.values()  # type: ignore[attr-defined]
    accepted = sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _RUN_ARGUMENTS)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"{type(optimizer).__name__}.compile takes no option {', '.join(map(repr, unknown))} in a "
            f"cluster optimization; it takes: {', '.join(accepted) or 'none'}"
        )


def start_options(optimizer: Optimizer, metric: Any) -> dict[str, Any]:
    """What ``optimizer.start`` takes besides the program and the sets: the metric, for optimizers
    that take it there rather than in their constructor (LabeledFewShot)."""
    return {"metric": metric} if "metric" in inspect.signature(optimizer.start).parameters else {}  # type: ignore[attr-defined]
