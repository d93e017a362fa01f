"""``dspex.Client``: evaluate programs on the cluster, with the result local ``Evaluate`` gives.

    with dspex.Client("127.0.0.1:9092") as client, dspex.context(lm=lm):
        result = client.evaluate(program, devset, "exact_match:answer")
        result.score, result.results, result.usage

A submission publishes the programs (candidates topic), the job (jobs topic) and one task per
candidate and example (tasks topic); the client then follows the job's status, showing a progress
bar, and reads the job's per-example scores from the one scores partition its id hashes to.
Everything that can be refused (metric, examples, programs, LM settings, allow-lists) is checked
before anything is produced.

Outcomes, by the ``stop_reason`` the aggregator puts in the job's status (:mod:`dspex.client._stop`):
a ``completed`` job gives its results; a job stopped at ``max_errors`` or ``max_cost_usd`` gives
the partial results with ``stopped_early=True`` (as local Evaluate does at ``max_errors``); a
systemic failure (a bad key, an unknown model) raises what local Evaluate raises, which is a
:class:`~dspex.errors.JobError` too, whatever the limits; any other failure, a cancellation, or
``timeout`` passing raises JobError. Sync methods are thin wrappers of the async ones (``a``-prefixed).

:class:`dspex.Client` is built in layers, each a module: :mod:`~dspex.client._client_base`
(connection and lifecycle), :mod:`~dspex.client._client_jobs` (any job's status, results and
cancellation, and the cluster's workers and lag), :mod:`~dspex.client._client_outcomes`
(submitting evaluation jobs and turning their scores into results),
:mod:`~dspex.client._client_evaluate` (the evaluate, run and predict methods) and
:mod:`~dspex.client._client` (optimization, and the class itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from dspex._sync import run_sync
from dspex.client import _optimize
from dspex.client._client_base import Program
from dspex.client._client_evaluate import EvaluateOptions, EvaluatingClient
from dspex.metrics import MetricLike
from dspex.primitives import Example, Module
from dspex.tracking import follow_optimization

__all__ = ["Client", "EvaluateOptions"]


class Client(EvaluatingClient):
    """A connection to a dspex cluster (a Kafka broker and the workers consuming from it)."""

    # -- optimization ------------------------------------------------------------------------------

    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: Literal[True] = True, **options: Any,
    ) -> Module: ...  # fmt: skip
    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: Literal[False], **options: Any,
    ) -> str: ...  # fmt: skip
    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: bool, **options: Any,
    ) -> Module | str: ...  # fmt: skip
    def optimize(self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
                 metric: MetricLike, *, wait: bool = True, **options: Any) -> Module | str:  # fmt: skip
        """Optimize ``program`` on the cluster (``dspex worker optimize``); returns the best program,
        or the job id with ``wait=False``. Options: see :meth:`aoptimize`."""
        return run_sync(self.aoptimize(program, trainset, valset, metric, wait=wait, **options))

    @overload
    async def aoptimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, optimizer: str = "bootstrap-rs", knobs: Mapping[str, Any] | None = None,
        compile_options: Mapping[str, Any] | None = None, wait: Literal[True] = True,
        timeout: float | None = None, display_progress: bool = False, **limits: Any,
    ) -> Module: ...  # fmt: skip
    @overload
    async def aoptimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, optimizer: str = "bootstrap-rs", knobs: Mapping[str, Any] | None = None,
        compile_options: Mapping[str, Any] | None = None, wait: Literal[False],
        timeout: float | None = None, display_progress: bool = False, **limits: Any,
    ) -> str: ...  # fmt: skip
    @overload
    async def aoptimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, optimizer: str = "bootstrap-rs", knobs: Mapping[str, Any] | None = None,
        compile_options: Mapping[str, Any] | None = None, wait: bool,
        timeout: float | None = None, display_progress: bool = False, **limits: Any,
    ) -> Module | str: ...  # fmt: skip
    async def aoptimize(
        self,
        program: Program,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None,
        metric: MetricLike,
        *,
        optimizer: str = "bootstrap-rs",
        knobs: Mapping[str, Any] | None = None,
        compile_options: Mapping[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        display_progress: bool = False,
        **limits: Any,
    ) -> Module | str:
        """Async form of :meth:`optimize`. ``knobs`` go to the optimizer's constructor,
        ``compile_options`` to its compile (MIPROv2's ``num_trials``, ``minibatch_size``, ...).
        ``limits``: name, seed, max_lm_calls, max_cost_usd, max_errors, mode (``"batch"``: the full
        evaluations through the provider's Batch API). JobError when the
        optimization fails, is cancelled or outlasts ``timeout``."""
        options = dict(compile_options or {})
        request = _optimize.OptimizeRequest(
            program, trainset, valset, metric, optimizer, dict(knobs or {}), options, **limits
        )
        spec, job = _optimize.build_optimize_job(request, self.policy, self.blob_settings)
        await self._aready(create_topics=True)
        await _optimize.submit_optimize(self._get_producer(), self.registry, spec, job, blobs=self._blobs)
        if not wait:
            return job.job_id
        followed = follow_optimization(optimizer)  # with MLflow on: its run, trials as they come
        try:
            status = await _optimize.wait_optimize(
                self.settings, self.registry, job.job_id, timeout=timeout,
                display_progress=display_progress, on_status=followed,
            )  # fmt: skip
            best = await _optimize.fetch_program(
                self.settings, self.registry, status, allow_modules=self.policy.allow_modules
            )
        except BaseException:
            if followed is not None:  # failed, cancelled or not waited for: the run says so
                followed.completed(None, knobs=request.knobs, seed=job.seed, trainset=trainset)
            raise
        if followed is not None:
            followed.completed(best, knobs=request.knobs, seed=job.seed, trainset=trainset)
        return best
