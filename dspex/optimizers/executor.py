"""The executor seam: the two operations an optimizer asks of wherever programs run.

    executor = LocalExecutor(concurrency=64)                 # in this process, asyncio
    executor = KafkaExecutor(dspex.Client("127.0.0.1:9092"))  # through the cluster

    preds = await executor.run(teacher, trainset)                           # with traces, example order
    results = await executor.evaluate_many(candidates, valset, metric)      # all at once, candidate order

Optimizers know nothing else about where work runs. DSPy evaluates candidates one after another;
an executor gets all of them at once, so their examples are in flight together. Results always come
back in example order (and candidate order), so the same seed gives the same program everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextlib import nullcontext
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from dspex._parallel import resolve_concurrency
from dspex.configuration import context
from dspex.errors import ConfigurationError, LMError
from dspex.evaluate import Evaluate, EvaluationResult
from dspex.lm import LM
from dspex.primitives import Example, Module, Prediction

__all__ = [
    "Executor",
    "KafkaExecutor",
    "LocalExecutor",
    "Programs",
    "gather_or_cancel",
    "per_example",
    "rollout_copy",
    "rollout_programs",
]

T = TypeVar("T")

# One program for every example, or one per example (e.g. a teacher without that example in its demos).
Programs = Module | Sequence[Module]

# What a rollout runs at when the caller does not say (DSPy's bootstrapping rounds use 1.0).
ROLLOUT_TEMPERATURE = 1.0


@runtime_checkable
class Executor(Protocol):
    """Where an optimizer's programs run.

    Usage: the optimizer measures in-process LM calls itself (``track_usage`` around each step); an
    executor whose ``remote`` attribute is true also has the usage its results report charged (calls
    made by remote workers).
    """

    async def run(
        self,
        program: Programs,
        examples: Sequence[Example],
        *,
        rollout_id: int | None = None,
        lm: LM | None = None,
    ) -> list[Prediction | Exception]:
        """Run ``program`` on each example's inputs: predictions (with ``.trace``) or the exception
        each run raised, in example order. ``rollout_id``: every predictor sends it as the request
        seed, at temperature 1.0 (a fresh draw a cache or a deterministic LM cannot repeat).
        ``lm``: the default LM of the run (predictors that carry their own keep it)."""
        ...

    async def evaluate_many(
        self,
        candidates: Sequence[Module],
        examples: Sequence[Example],
        metric: Any,
        *,
        failure_score: float = 0.0,
        max_errors: int | None = None,
    ) -> list[EvaluationResult]:
        """Every candidate on every example, all at once: one result per candidate, in candidate
        order, each with its records in example order (``Evaluate``'s scoring rule)."""
        ...


def per_example(program: Programs, count: int) -> list[Module]:
    """``program`` repeated for ``count`` examples, or the given per-example list (checked)."""
    if isinstance(program, Module):
        return [program] * count
    programs = list(program)
    if len(programs) != count:
        raise ConfigurationError(
            f"{len(programs)} programs for {count} examples: give one, or one per example"
        )
    return programs


def rollout_programs(program: Programs, count: int, rollout_id: int | None) -> list[Module]:
    """The program of each of ``count`` examples, as rollout copies when ``rollout_id`` is given
    (one copy per distinct program, so examples sharing a program still share its copy)."""
    programs = per_example(program, count)
    if rollout_id is None:
        return programs
    copies: dict[int, Module] = {}
    return [copies.setdefault(id(p), rollout_copy(p, rollout_id)) for p in programs]


def rollout_copy(program: Module, rollout_id: int, temperature: float = ROLLOUT_TEMPERATURE) -> Module:
    """A copy whose predictors send ``rollout_id`` (the request ``seed``) at ``temperature``.

    This is what DSPy does with ``lm.copy(rollout_id=..., temperature=1.0)``, applied per predictor
    so that predictors carrying their own LM get a fresh rollout too.
    """
    copied = program.deepcopy()
    for predictor in copied.predictors():
        predictor.config = {**predictor.config, "rollout_id": rollout_id, "temperature": temperature}
    return copied


def _systemic(exc: Exception) -> bool:
    # Every run would fail the same way (no LM configured, a bad key): stop, do not score it as 0.
    return isinstance(exc, ConfigurationError) or (isinstance(exc, LMError) and exc.systemic)


async def gather_or_cancel(aws: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, but the first exception cancels the others instead of leaving them running."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Gated:
    """A program whose calls wait for a slot of a semaphore shared by every candidate."""

    def __init__(self, program: Module, gate: asyncio.Semaphore) -> None:
        self.program, self.gate = program, gate

    async def acall(self, **inputs: Any) -> Prediction:
        async with self.gate:
            return await self.program.acall(**inputs)


class LocalExecutor:
    """Runs programs in this process with asyncio: at most ``concurrency`` program calls in flight,
    across all candidates of an ``evaluate_many`` (one shared bound, so candidates run together).

    ``num_threads`` is accepted as DSPy's name for ``concurrency``.
    """

    remote = False  # its programs' LM calls happen in this process (see OptimizerRun.step)

    def __init__(self, concurrency: int | None = None, *, num_threads: int | None = None) -> None:
        self.concurrency = resolve_concurrency(concurrency, num_threads)

    def __repr__(self) -> str:
        return f"LocalExecutor(concurrency={self.concurrency})"

    async def run(
        self,
        program: Programs,
        examples: Sequence[Example],
        *,
        rollout_id: int | None = None,
        lm: LM | None = None,
    ) -> list[Prediction | Exception]:
        programs = rollout_programs(program, len(examples), rollout_id)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(index: int) -> Prediction | Exception:
            async with gate:
                try:
                    return await programs[index].acall(**_inputs(examples[index]))
                except Exception as exc:
                    if _systemic(exc):
                        raise
                    return exc

        with context(lm=lm) if lm is not None else nullcontext():
            return await gather_or_cancel([one(i) for i in range(len(examples))])

    async def evaluate_many(
        self,
        candidates: Sequence[Module],
        examples: Sequence[Example],
        metric: Any,
        *,
        failure_score: float = 0.0,
        max_errors: int | None = None,
    ) -> list[EvaluationResult]:
        gate = asyncio.Semaphore(self.concurrency)
        # Each candidate gets an Evaluate with a worker per example; the shared gate is the real bound,
        # so the examples of several candidates are in flight together.
        evaluate = Evaluate(
            devset=list(examples),
            metric=metric,
            concurrency=max(1, len(examples)),
            failure_score=failure_score,
            max_errors=max_errors,
        )
        return await gather_or_cancel([evaluate.acall(_Gated(c, gate)) for c in candidates])


def _inputs(example: Example) -> dict[str, Any]:
    return dict(example.inputs().items())


class KafkaExecutor:
    """The executor over a :class:`dspex.Client`: programs run on the cluster's predictors.

    ``run`` is :meth:`dspex.Client.apredict` (one job per distinct program, all at once; the
    predictions come back with their traces and the usage the workers spent, ``pred.usage``);
    ``evaluate_many`` is one evaluation job of every candidate on every example. As for any remote
    executor, the optimizer charges the usage the results carry (``StepCost.reported``).
    ``parent_job_id`` marks the jobs as the work of that optimization (``EvalJob.parent_job_id``).
    ``evaluation_mode="batch"`` sends the full evaluations (``evaluate_many``, not ``run``) through the
    provider's Batch API: half the price, hours rather than seconds per evaluation.
    """

    remote = True  # LM calls happen on workers; their usage comes back in the results

    def __init__(
        self,
        client: Any,
        *,
        timeout: float | None = None,
        display_progress: bool = False,
        parent_job_id: str | None = None,
        evaluation_mode: Literal["online", "batch"] = "online",
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.display_progress = display_progress
        self.parent_job_id = parent_job_id
        self.evaluation_mode = evaluation_mode

    def __repr__(self) -> str:
        return f"KafkaExecutor({self.client!r})"

    async def run(
        self,
        program: Programs,
        examples: Sequence[Example],
        *,
        rollout_id: int | None = None,
        lm: LM | None = None,
    ) -> list[Prediction | Exception]:
        # The rollout's seed and temperature are predictor config: they travel with the program.
        programs = rollout_programs(program, len(examples), rollout_id)
        name = "runs" if rollout_id is None else f"runs (rollout {rollout_id})"
        # The LM in the context when the jobs are built is the one the predictors use.
        with context(lm=lm) if lm is not None else nullcontext():
            outcomes = await self.client.apredict(
                programs, list(examples), name=name, timeout=self.timeout, parent_job_id=self.parent_job_id
            )
        return list(outcomes)

    async def evaluate_many(
        self,
        candidates: Sequence[Module],
        examples: Sequence[Example],
        metric: Any,
        *,
        failure_score: float = 0.0,
        max_errors: int | None = None,
    ) -> list[EvaluationResult]:
        results = await self.client.arun(
            list(candidates),
            list(examples),
            metric,
            failure_score=failure_score,
            max_errors=max_errors,
            display_progress=self.display_progress,
            timeout=self.timeout,
            parent_job_id=self.parent_job_id,
            **({"mode": "batch"} if self.evaluation_mode == "batch" else {}),
        )
        return list(results)
