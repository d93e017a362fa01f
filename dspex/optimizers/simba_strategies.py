"""SIMBA's pieces: program variants, the pool, scored trajectories, buckets, sampling, demos.

A *variant* is what SIMBA changes in a program (each predictor's instructions and demos), so every
program of the pool rebuilds from the student and a variant (what a checkpoint holds). A *trajectory*
is one sampled run of a pool program on a minibatch example, with its score and its trace. A
*bucket* holds the trajectories of one example, best first; buckets whose runs disagree most come
first.

:func:`append_demo` is the first strategy (the best trajectory becomes one demo per predictor); the
second, an LM-written rule, is in :mod:`dspex.optimizers.simba_rules`.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict
from pydantic_core import to_jsonable_python

from dspex.metrics import score_of
from dspex.primitives import Example, Module, Prediction

__all__ = [
    "DEMO",
    "RULE",
    "Bucket",
    "Member",
    "Trajectory",
    "Variant",
    "append_demo",
    "demos_to_drop",
    "make_buckets",
    "percentile",
    "poisson",
    "scored_run",
    "softmax_choice",
    "spaced_positions",
    "top_programs",
]

DEMO, RULE = "append a demo", "append a rule"
_TRUNCATED = " ... (truncated)"


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """Each predictor's instructions and demos (demos as JSON dicts), in predictor order."""

    # validated as part of a checkpoint (dspex.optimizers.checkpoint.SimbaState)
    __pydantic_config__ = ConfigDict(extra="forbid")

    instructions: tuple[str, ...]
    demos: tuple[tuple[dict[str, Any], ...], ...]

    @classmethod
    def of(cls, program: Module) -> Variant:
        predictors = program.predictors()
        return cls(
            tuple(p.signature.instructions for p in predictors),
            tuple(tuple(to_jsonable_python([d.to_dict() for d in p.demos])) for p in predictors),
        )

    def build(self, student: Module) -> Module:
        """A copy of ``student`` with these instructions and demos."""
        program = student.deepcopy()
        for predictor, text, demos in zip(program.predictors(), self.instructions, self.demos, strict=True):
            predictor.signature = predictor.signature.with_instructions(text)
            predictor.demos = [Example(demo) for demo in demos]
        return program

    def without_demos(self, positions: set[int]) -> Variant:
        """Demo positions dropped from every predictor (DSPy drops by position across predictors)."""
        kept = tuple(tuple(d for i, d in enumerate(demos) if i not in positions) for demos in self.demos)
        return Variant(self.instructions, kept)


@dataclass
class Member:
    """A program of the pool: its variant, its minibatch scores (the metric's scale) and its origin."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    variant: Variant
    scores: list[float]
    label: str

    @property
    def average(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def top_programs(averages: Sequence[float], k: int) -> list[int]:
    """DSPy's top ``k`` pool positions by average score (stable), with the student (0) always in."""
    ranked = sorted(range(len(averages)), key=lambda i: averages[i], reverse=True)
    top = ranked[:k]
    if 0 not in top:
        top[-1] = 0
    return list(dict.fromkeys(top))


def spaced_positions(winners: int, count: int) -> list[int]:
    """DSPy's final pick: ``count`` positions evenly spaced over ``winners`` winners, deduplicated."""
    last = winners - 1
    positions = [0] * count if last < 1 else [round(i * last / (count - 1)) for i in range(count)]
    return list(dict.fromkeys(positions))


# --------------------------------------------------------------------------- trajectories and buckets


@dataclass(frozen=True)
class Trajectory:
    """One sampled run: which pool program and model ran it, its score and what it did."""

    program: int
    model: int
    score: float
    steps: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...]  # (predictor path, inputs, outputs)
    outputs: dict[str, Any] | None  # the prediction's fields; None when the run failed
    feedback: str | None = None


@dataclass(frozen=True)
class Bucket:
    """The trajectories of one minibatch example, best first."""

    example: Example
    runs: tuple[Trajectory, ...]

    @property
    def gaps(self) -> tuple[float, float, float]:
        """DSPy's sort key: (max - min, max, max - mean)."""
        scores = [run.score for run in self.runs]
        best = scores[0]
        return best - scores[-1], best, best - sum(scores) / len(scores)


async def scored_run(
    metric: Any, example: Example, pred: Prediction | Exception, program: int, model: int
) -> tuple[Trajectory, str | None]:
    """A run as a trajectory scored by ``metric``, and the error if the run or the metric failed
    (such a run scores 0, as in DSPy)."""
    if isinstance(pred, Exception):
        return Trajectory(program, model, 0.0, (), None), f"{type(pred).__name__}: {pred}"
    steps = tuple((s.predictor_path, dict(s.inputs), dict(s.outputs)) for s in pred.trace)
    try:
        value = metric(example, pred)
        score, feedback = score_of(await value if inspect.isawaitable(value) else value)
    except Exception as exc:  # the metric's failure is this run's, counted against max_errors
        return Trajectory(program, model, 0.0, steps, dict(pred.items())), f"{type(exc).__name__}: {exc}"
    return Trajectory(program, model, score, steps, dict(pred.items()), feedback), None


def make_buckets(examples: Sequence[Example], runs: Sequence[Sequence[Trajectory]]) -> list[Bucket]:
    """One bucket per example (``runs[e]``: its trajectories in model order), most informative first.

    Sorts are stable: of equal scores the earlier model comes first, of equal gaps the earlier example.
    """
    buckets = [
        Bucket(example, tuple(sorted(trajectories, key=lambda t: t.score, reverse=True)))
        for example, trajectories in zip(examples, runs, strict=True)
    ]
    return sorted(buckets, key=lambda bucket: bucket.gaps, reverse=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------- sampling


def softmax_choice(
    rng: random.Random, options: Sequence[int], scores: Sequence[float], temperature: float
) -> int:
    """One of ``options``, drawn with probability proportional to ``exp(score / temperature)``."""
    top = max(scores)
    # shifted by the top score: the same distribution, without overflow for large scores
    weights = [math.exp((score - top) / temperature) for score in scores]
    return rng.choices(list(options), weights=weights, k=1)[0]


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: the means here are a few demos at most)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def demos_to_drop(rng: random.Random, num_demos: int, max_demos: int) -> set[int]:
    """DSPy's demo drop: about ``num_demos / max_demos`` positions, at least one once full."""
    cap = max_demos if max_demos > 0 else 3
    count = min(max(poisson(rng, num_demos / cap), int(num_demos >= cap)), num_demos)
    return {rng.randrange(num_demos) for _ in range(count)}


# --------------------------------------------------------------------------- append a demo


def append_demo(variant: Variant, paths: Sequence[str], good: Trajectory, maxlen: int) -> Variant:
    """The best run's last call of each predictor, appended to that predictor's demos."""
    last: dict[str, dict[str, Any]] = {}
    for path, inputs, outputs in good.steps:
        if path in paths:
            shortened = {name: _truncated(value, maxlen) for name, value in inputs.items()}
            last[path] = to_jsonable_python({"augmented": True, **shortened, **outputs})
    demos = tuple(
        (*demos, last[path]) if path in last else demos
        for path, demos in zip(paths, variant.demos, strict=True)
    )
    return Variant(variant.instructions, demos)


def _truncated(value: Any, maxlen: int) -> Any:
    text = str(value)
    return text[:maxlen] + _TRUNCATED if maxlen and len(text) > maxlen else value
