"""The evaluate, run and predict methods of :class:`dspex.Client`, and their options.

One layer of :class:`dspex.Client`; :mod:`dspex.client._client` lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack, overload

from dspex._sync import run_sync
from dspex.client import _runs
from dspex.client._client_base import Program
from dspex.client._client_outcomes import SubmittingClient
from dspex.client._stop import stopped_early
from dspex.client._submit import Limits, build_submission, lm_mode
from dspex.client.results import evaluation_result
from dspex.errors import JobError
from dspex.evaluate import EvaluationResult
from dspex.metrics import MetricLike
from dspex.primitives import Example, Module, Prediction
from dspex.schemas import JobStatus, Priority

__all__ = ["EvaluateOptions", "EvaluatingClient"]


class EvaluateOptions(TypedDict, total=False):
    """The options of :meth:`Client.evaluate`, :meth:`~Client.aevaluate`, :meth:`~Client.evaluate_many`
    and :meth:`~Client.aevaluate_many`, all keywords, each optional (its default in brackets).

    ``name`` (None: one is made up): the job's name, shown with its status. ``failure_score`` (0.0):
    the score of an example whose program or metric failed. ``max_errors`` (None: no limit) and
    ``max_cost_usd`` (None: no limit): the job stops at more failed examples, or a higher cost, with
    partial results (``stopped_early``). ``priority`` (None: "normal"): "interactive", "normal" or
    "bulk", the job's share of the predictors. ``num_threads`` (None: as many as the predictors give
    it): how many of the job's examples may run at once in each predictor, DSPy's ``num_threads``
    (exactly so with one predictor); more than the live predictors allow is clamped to that, and the
    job's status says so (``note``). ``display_progress`` (True): a progress bar while
    waiting. ``timeout`` (None: no limit): seconds to wait before JobError (the job keeps running).
    ``mode`` ("online"): "batch" sends the LM calls through the provider's Batch API at its price
    (about half), answered within hours rather than seconds; a ``dspex worker provider-batch`` must run.
    """

    name: str | None
    failure_score: float
    max_errors: int | None
    max_cost_usd: float | None
    priority: Priority | None
    num_threads: int | None
    display_progress: bool
    timeout: float | None
    mode: Literal["online", "batch"]


@dataclass(frozen=True)
class _EvaluateCall:
    """One call of the evaluate methods: the job's limits and how to wait for it."""

    limits: Limits
    wait: bool = True
    display_progress: bool = True
    timeout: float | None = None

    @classmethod
    def of(cls, method: str, wait: bool, options: EvaluateOptions) -> _EvaluateCall:
        """The call of ``method(..., wait=wait, **options)``; TypeError for an unknown keyword, as a
        signature that listed the options would raise."""
        unknown = sorted(set(options) - EvaluateOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"Client.{method}() got an unexpected keyword argument {unknown[0]!r}")
        limits = Limits(
            options.get("name"),
            options.get("failure_score", 0.0),
            options.get("max_errors"),
            options.get("max_cost_usd"),
            priority=options.get("priority"),
            num_threads=options.get("num_threads"),
            lm_mode=lm_mode(options.get("mode", "online")),
        )
        return cls(limits, wait, options.get("display_progress", True), options.get("timeout"))


class EvaluatingClient(SubmittingClient):
    """A client's evaluations (one program or several as one job), runs and predictions."""

    # -- evaluation --------------------------------------------------------------------------------

    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult: ...  # fmt: skip
    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str: ...  # fmt: skip
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str:  # fmt: skip
        """Evaluate ``program`` on ``devset`` with ``metric`` through the cluster.

        ``metric``: a metric object (``dspex.metrics.exact_match("answer")``), its name
        (``"exact_match:answer"``) or an import path (``"mypkg.metrics:judge"``). The job stops at
        more than ``max_errors`` failed examples or a cost over ``max_cost_usd`` (partial results,
        ``stopped_early``). ``priority`` ("interactive", "normal" or "bulk"; None: normal) weighs the
        job against the others the predictors run: every job gets a share of them whatever its size,
        interactive ones a larger one (ConfigurationError for another name). A systemic error (a bad
        key) raises as local Evaluate does, whatever the limits. ``timeout`` (seconds, None for no
        limit) bounds the wait. Returns an EvaluationResult, or the job id with ``wait=False``.
        The options (keywords): :class:`EvaluateOptions`.

            >>> with dspex.Client("127.0.0.1:9092") as client, dspex.context(lm=lm):  # doctest: +SKIP
            ...     result = client.evaluate(qa, devset, "exact_match:answer")
        """
        call = _EvaluateCall.of("evaluate", wait, options)
        return run_sync(self._aevaluate_one(program, devset, metric, call))

    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult: ...  # fmt: skip
    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str: ...  # fmt: skip
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str:  # fmt: skip
        """Async form of :meth:`evaluate`."""
        return await self._aevaluate_one(
            program, devset, metric, _EvaluateCall.of("aevaluate", wait, options)
        )

    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult]: ...  # fmt: skip
    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str: ...  # fmt: skip
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str:  # fmt: skip
        """Evaluate several programs as ONE job, all their tasks at once: one result per program, in
        the order given (or the job id with ``wait=False``). Options as :meth:`evaluate`."""
        call = _EvaluateCall.of("evaluate_many", wait, options)
        return run_sync(self._aevaluate(programs, devset, metric, call))

    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult]: ...  # fmt: skip
    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str: ...  # fmt: skip
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str:  # fmt: skip
        """Async form of :meth:`evaluate_many`."""
        return await self._aevaluate(
            programs, devset, metric, _EvaluateCall.of("aevaluate_many", wait, options)
        )

    async def arun(
        self,
        candidates: Sequence[Program],
        examples: Sequence[Example],
        metric: MetricLike,
        *,
        name: str | None = None,
        failure_score: float = 0.0,
        max_errors: int | None = None,
        max_cost_usd: float | None = None,
        display_progress: bool = False,
        timeout: float | None = None,
        parent_job_id: str | None = None,
        mode: Literal["online", "batch"] = "online",
    ) -> list[EvaluationResult]:
        """Run candidates x examples as one job; one result per candidate, in the order given.

        The operation optimizers call on an executor: no progress bar unless asked for.
        ``parent_job_id``: the optimization this evaluation is part of (shown with the job).
        ``mode``: as :meth:`evaluate`'s ("batch": through the provider's Batch API).
        """
        limits = Limits(
            name, failure_score, max_errors, max_cost_usd, parent_job_id=parent_job_id, lm_mode=lm_mode(mode)
        )
        submitted = await self._asubmit(candidates, examples, metric, limits)
        try:
            async with self._cancelled_with_caller([submitted]):
                return await self._aoutcome(submitted, display_progress=display_progress, timeout=timeout)
        finally:
            # Read once, right away: an optimizer's many evaluations are not kept for collect().
            self._submitted.pop(submitted.submission.job.job_id, None)

    def predict(
        self,
        program: Module | Sequence[Module],
        examples: Sequence[Example],
        *,
        name: str | None = None,
        timeout: float | None = None,
        parent_job_id: str | None = None,
    ) -> list[Prediction | Exception]:
        """Run ``program`` (or one program per example) on each example through the cluster: the
        predictions with their traces and usage, or the exception each run raised, in example order.
        See :meth:`apredict`."""
        return run_sync(
            self.apredict(program, examples, name=name, timeout=timeout, parent_job_id=parent_job_id)
        )

    async def apredict(
        self,
        program: Module | Sequence[Module],
        examples: Sequence[Example],
        *,
        name: str | None = None,
        timeout: float | None = None,
        parent_job_id: str | None = None,
    ) -> list[Prediction | Exception]:
        """Async form of :meth:`predict` (the executor operation "run a program over examples").

        Each distinct program is one job over its examples; all are published at once and followed
        together. A job that fails as a whole (a systemic error: a bad key, a program the workers
        cannot build), is cancelled, or outlasts ``timeout`` raises JobError.
        """
        groups = _runs.group_by_program(program, len(examples))
        limits = Limits(name or "runs", parent_job_id=parent_job_id)
        submissions = [
            build_submission(
                [group.program], _runs.examples_at(examples, group.positions), _runs.RUN_METRIC,
                policy=self.policy, limits=limits, blob_settings=self.blob_settings,
            )
            for group in groups
        ]  # fmt: skip
        if not submissions:
            return []
        submitted = await self._asubmit_all(submissions)
        async with self._cancelled_with_caller(submitted):
            results = await self._aoutcomes(submitted, timeout=timeout)
        found: dict[int, Prediction | Exception] = {}
        for group, records in zip(groups, results, strict=True):
            by_index = {record.example_index: record for record in records}
            for index, position in enumerate(group.positions):
                found[position] = _runs.prediction_of(by_index.get(index), group.program, examples[position])
        return [found[position] for position in range(len(examples))]

    async def _aevaluate_one(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, call: _EvaluateCall
    ) -> EvaluationResult | str:
        outcome = await self._aevaluate([program], devset, metric, call)
        return outcome if isinstance(outcome, str) else outcome[0]

    async def _aevaluate(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, call: _EvaluateCall
    ) -> list[EvaluationResult] | str:
        submitted = await self._asubmit(programs, devset, metric, call.limits)
        if not call.wait:
            return submitted.submission.job.job_id
        return await self._aoutcome(submitted, display_progress=call.display_progress, timeout=call.timeout)

    def collect(self, job_id: str) -> list[EvaluationResult]:
        """The results of a finished job, one per candidate (for a job submitted with ``wait=False``)."""
        return run_sync(self.acollect(job_id))

    async def acollect(self, job_id: str) -> list[EvaluationResult]:
        """Async form of :meth:`collect`."""
        known = self._submitted.get(job_id)
        if known is not None:
            return await self._aoutcome(known, display_progress=False, timeout=None)
        status = await self.astatus(job_id)
        if not isinstance(status, JobStatus):
            raise JobError(f"no evaluation job {job_id} on {self.registry.name('status')}", job_id=job_id)
        records = await self.aresults(job_id)
        # A job still running gives what is there so far; a finished one ends as a waited-for one
        # (its limits unknown here: a status without stop_reason that failed raises).
        stopped = stopped_early(status, records) if status.finished else True
        totals = {c.candidate_id: c.total for c in status.candidates}
        return [
            evaluation_result(cid, records, None, total=total, metric="score", stopped_early=stopped)
            for cid, total in totals.items()
        ]
