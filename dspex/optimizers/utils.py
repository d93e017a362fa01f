"""DSPy's ``dspy.teleprompt.utils``: the helpers its optimizers share, with the same names and rules.

    from dspex.teleprompt.utils import create_n_fewshot_demo_sets, eval_candidate_program

    demo_sets = create_n_fewshot_demo_sets(program, 8, trainset, max_labeled_demos=4,
                                           max_bootstrapped_demos=2, metric=metric, teacher_settings={})
    demo_sets[0]          # predictor 0's demo list of each of the 8 candidate sets
    result = eval_candidate_program(25, valset, program, dspex.Evaluate(devset=valset, metric=metric))

``create_n_fewshot_demo_sets`` makes the candidate demo sets the way random search does (zero-shot,
labeled only, unshuffled bootstrap, then shuffled bootstraps of random sizes), one after another
with dspex's optimizers; dspex's own MIPROv2 plans the same sets and bootstraps them all at once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from dspex._sync import run_sync
from dspex.configuration import current_settings
from dspex.evaluate import EvaluationResult
from dspex.optimizers._base import effective_max_errors
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.labeled import LabeledFewShot
from dspex.primitives import Example, Module

__all__ = [
    "acreate_n_fewshot_demo_sets",
    "create_minibatch",
    "create_n_fewshot_demo_sets",
    "eval_candidate_program",
    "get_prompt_model",
    "get_signature",
    "set_signature",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def create_minibatch(
    trainset: Sequence[T], batch_size: int = 50, rng: random.Random | None = None
) -> list[T]:
    """``batch_size`` items of ``trainset`` sampled without replacement (all of them when fewer),
    with ``rng`` or the ``random`` module's generator."""
    size = min(batch_size, len(trainset))
    chosen = (rng or random).sample(range(len(trainset)), size)
    return [trainset[index] for index in chosen]


def eval_candidate_program(
    batch_size: int,
    trainset: Sequence[Any],
    candidate_program: Any,
    evaluate: Callable[..., Any],
    rng: random.Random | None = None,
) -> Any:
    """``evaluate(candidate_program, devset=...)`` on the whole trainset when ``batch_size`` covers it,
    else on a minibatch of it; an evaluation that raises is logged and scores 0.0 (no results)."""
    try:
        if batch_size >= len(trainset):
            return evaluate(candidate_program, devset=trainset, callback_metadata={"metric_key": "eval_full"})
        minibatch = create_minibatch(trainset, batch_size, rng)
        return evaluate(
            candidate_program, devset=minibatch, callback_metadata={"metric_key": "eval_minibatch"}
        )
    except Exception:
        # DSPy's rule: a failed evaluation is a zero score, so a search can go on with the others.
        logger.error("An exception occurred during evaluation", exc_info=True)
        return EvaluationResult(score=0.0, results=[])


def get_prompt_model(prompt_model: Any) -> Any:
    """``prompt_model``, or the configured LM when None."""
    return prompt_model if prompt_model else current_settings().lm


def get_signature(predictor: Any) -> Any:
    """The predictor's signature."""
    return predictor.signature


def set_signature(predictor: Any, updated_signature: Any) -> None:
    """Give the predictor ``updated_signature``."""
    predictor.signature = updated_signature


def create_n_fewshot_demo_sets(
    student: Module,
    num_candidate_sets: int,
    trainset: Sequence[Example],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    metric: Any,
    teacher_settings: Mapping[str, Any] | None,
    max_errors: int | None = None,
    max_rounds: int = 1,
    labeled_sample: bool = True,
    min_num_samples: int = 1,
    metric_threshold: float | None = None,
    teacher: Module | None = None,
    include_non_bootstrapped: bool = True,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict[int, list[list[Example]]]:
    """``num_candidate_sets`` demo sets per predictor: ``{predictor index: [demos of each set]}``.

    As in DSPy: set -3 is zero-shot and -2 labeled demos only (both unless
    ``include_non_bootstrapped=False``, -2 also needs ``max_labeled_demos > 0``), -1 BootstrapFewShot
    on the trainset as given, and every other set BootstrapFewShot on the trainset shuffled by
    ``rng`` (``random.Random(seed)`` when None) with ``rng.randint(min_num_samples,
    max_bootstrapped_demos)`` demos. ``max_errors=None`` reads ``dspex.settings.max_errors``.
    """
    return run_sync(
        acreate_n_fewshot_demo_sets(
            student,
            num_candidate_sets,
            trainset,
            max_labeled_demos,
            max_bootstrapped_demos,
            metric,
            teacher_settings,
            max_errors=max_errors,
            max_rounds=max_rounds,
            labeled_sample=labeled_sample,
            min_num_samples=min_num_samples,
            metric_threshold=metric_threshold,
            teacher=teacher,
            include_non_bootstrapped=include_non_bootstrapped,
            seed=seed,
            rng=rng,
        )
    )


async def acreate_n_fewshot_demo_sets(
    student: Module,
    num_candidate_sets: int,
    trainset: Sequence[Example],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    metric: Any,
    teacher_settings: Mapping[str, Any] | None,
    max_errors: int | None = None,
    max_rounds: int = 1,
    labeled_sample: bool = True,
    min_num_samples: int = 1,
    metric_threshold: float | None = None,
    teacher: Module | None = None,
    include_non_bootstrapped: bool = True,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict[int, list[list[Example]]]:
    """Async :func:`create_n_fewshot_demo_sets` (the sets are made one after another, as in DSPy)."""
    errors = effective_max_errors(max_errors)
    generator = rng or random.Random(seed)
    predictors = student.predictors()
    demo_sets: dict[int, list[list[Example]]] = {index: [] for index in range(len(predictors))}

    def bootstrap(size: int) -> BootstrapFewShot:
        return BootstrapFewShot(
            metric=metric,
            max_errors=errors,
            metric_threshold=metric_threshold,
            max_bootstrapped_demos=size,
            max_labeled_demos=max_labeled_demos,
            teacher_settings=teacher_settings,
            max_rounds=max_rounds,
        )

    # DSPy counts the three fixed sets (-3, -2, -1) within num_candidate_sets.
    for set_seed in range(-3, num_candidate_sets - 3):
        examples = list(trainset)
        program: Module
        if set_seed == -3 and include_non_bootstrapped:
            program = student.reset_copy()
        elif set_seed == -2 and max_labeled_demos > 0 and include_non_bootstrapped:
            program = await LabeledFewShot(k=max_labeled_demos).acompile(
                student, trainset=examples, sample=labeled_sample
            )
        elif set_seed == -1:
            program = await bootstrap(max_bootstrapped_demos).acompile(
                student, teacher=teacher, trainset=examples
            )
        else:
            generator.shuffle(examples)
            size = generator.randint(min_num_samples, max_bootstrapped_demos)
            program = await bootstrap(size).acompile(student, teacher=teacher, trainset=examples)
        for index, predictor in enumerate(program.predictors()):
            demo_sets[index].append(list(predictor.demos))
    return demo_sets
