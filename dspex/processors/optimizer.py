"""The optimizer coordinator: optimize jobs in, checkpoints, best programs and status out
(``dspex worker optimize``).

For each OptimizeJob on the jobs topic (consumer group ``<prefix>optimize``; EvalJobs are ignored,
a Cancel stops the named optimization if this worker runs it):

1. build the student (the job's candidate, from the candidates topic, under the security policy),
   the trainset and valset (inline examples, their large values read back from the blobs topic as
   a predictor reads a task's), the metric and the LM (checked like a predictor's);
2. read the job's latest OptimizerCheckpoint from the optimizer-state topic and start the optimizer
   from it (``optimizer.start(..., state=...)``), with a :class:`~dspex.optimizers.KafkaExecutor`,
   so teacher runs and evaluations run on the cluster's predictors as evaluation jobs (each naming
   the optimization as its ``parent_job_id``); optimizers without a step-by-step run (KNNFewShot,
   Ensemble) are refused;
3. after every step: the checkpoint (key job_id), acknowledged by the broker before anything else,
   then the best program so far (candidates topic) and an OptimizeStatus (status topic);
4. at the end: a terminal OptimizeStatus (``completed``, ``failed`` or ``cancelled`` with the reason
   and its typed ``stop_reason``: the budget that ended a completed run, ``max_lm_calls`` or
   ``max_cost``; for a failed one ``max_errors``, ``systemic`` (every run would fail the same way)
   or ``invalid_submit`` (the job cannot be run as given); ``cancelled``).

The job's message is done (its offset committable) only when the optimization ends, so the job of
a killed worker is delivered again to the next owner, which resumes from the last checkpoint. What
the killed worker had spent on its unfinished step (its heartbeats list it) is reported by the next
owner as the status's ``usage_unreported`` (:mod:`dspex.processors.optimize_unreported`). On a
rebalance the worker does not wait for the step in progress: its handler is cancelled at once
(``drain_timeout`` of 0.1 s), the step's work is redone once by the next owner, and the latest
checkpoint stands. A step is either in a checkpoint or not at all, so the history never repeats a
step and never skips one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

from confluent_kafka import Message

from dspex import tracking
from dspex.client import Client
from dspex.configuration import context
from dspex.errors import (
    ConfigurationError,
    DspexError,
    LMError,
    MetricError,
    OptimizerError,
    ProgramLoadError,
)
from dspex.lm.usage import Usage
from dspex.metrics import metric_from_spec, resolve_metric
from dspex.observability import metrics as prometheus
from dspex.optimizers import KafkaExecutor, OptimizerRun
from dspex.optimizers.registry import check_compile_options, cluster_optimizer, start_options
from dspex.primitives import Example
from dspex.processors.aggregate_deaths import death_key
from dspex.processors.candidates import CandidateCache
from dspex.processors.common import Outcome, Worker
from dspex.processors.optimize_unreported import StepSpend, dead_owners_spend, results_usage, total_unreported
from dspex.processors.unreported import UnreportedLedger
from dspex.schemas.base import utc_now
from dspex.schemas.checkpoints import OptimizerCheckpoint
from dspex.schemas.common import ExampleSet, MetricSpec, UsageRecord
from dspex.schemas.jobs import Cancel, JobMessage, OptimizeJob
from dspex.schemas.programs import ProgramSpec
from dspex.schemas.serde import decode
from dspex.schemas.status import JobState, OptimizeStatus, OptimizeStopReason, TrialRecord
from dspex.schemas.workers import WorkerHeartbeat
from dspex.serialization import candidate_id, dump_program
from dspex.streams.blobs import BlobReader, refs_of
from dspex.streams.consumer import ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.reader import CompactedReader

__all__ = [
    "OptimizeCoordinator",
    "budget_stop",
    "examples_of",
    "executor_for",
    "failure_stop",
    "metric_of",
    "resolved_examples",
]

logger = logging.getLogger(__name__)

# A revoked optimization lets go at once: the last checkpoint stands, the step in progress is redone.
_RELEASE_S = 0.1
_CHECKPOINT_READ_S = 30.0


class _Cancelled(Exception):
    """A Cancel for the running optimization arrived."""


def examples_of(name: str, examples: ExampleSet) -> list[Example]:
    """The inline examples of a job's ExampleSet, their inputs marked."""
    if examples.examples is None:
        raise ConfigurationError(f"{name} is given by uri ({examples.uri}); only inline examples are read")
    return [Example(**row).with_inputs(*examples.input_keys) for row in examples.examples]


async def resolved_examples(name: str, examples: ExampleSet, blobs: BlobReader | None) -> list[Example]:
    """:func:`examples_of`, the values the client sent through the blobs topic read back (an
    InputError names the set, the example and the field of one that cannot be read)."""
    rows = examples.examples
    if blobs is None or not rows or not any(refs_of(row) for row in rows):
        return examples_of(name, examples)
    resolved = [
        await blobs.resolve(row, list(row), where=f"{name} example {index}") for index, row in enumerate(rows)
    ]
    return examples_of(name, examples.model_copy(update={"examples": resolved}))


def metric_of(spec: MetricSpec, allow_modules: tuple[str, ...]) -> Callable[..., Any]:
    """The job's metric: a built-in by name, or a function from an allowed module."""
    if spec.kind == "judge":
        raise MetricError(f"LM-judge metric {spec.name!r}: not supported by the coordinator yet")
    if spec.kind == "builtin":
        return metric_from_spec({"metric": spec.name, **spec.options} if spec.options else spec.name)
    return resolve_metric(spec.name, allow_modules=allow_modules)


def executor_for(
    client: Client, job: OptimizeJob, on_usage: Callable[[Usage], None] | None = None
) -> KafkaExecutor:
    """Where the job's evaluations run: child jobs of ``job`` on the cluster, its full evaluations
    in the job's ``evaluation_mode``; ``on_usage`` gets the usage each call's results carry."""
    executor = _SpendingExecutor(client, parent_job_id=job.job_id, evaluation_mode=job.evaluation_mode)
    executor.on_usage = on_usage
    return executor


class _SpendingExecutor(KafkaExecutor):
    """A KafkaExecutor that says what each finished call's results spent, as they come back (the
    step charges them only when it ends; until its checkpoint, heartbeats list them)."""

    on_usage: Callable[[Usage], None] | None = None

    async def run(self, *args: Any, **kwargs: Any) -> list[Any]:
        results = await super().run(*args, **kwargs)
        self._spent(results)
        return results

    async def evaluate_many(self, *args: Any, **kwargs: Any) -> list[Any]:
        results = await super().evaluate_many(*args, **kwargs)
        self._spent(results)
        return results

    def _spent(self, results: list[Any]) -> None:
        if self.on_usage is not None:
            self.on_usage(results_usage(results))


class OptimizeCoordinator(Worker):
    """Runs optimize jobs with the Kafka executor, checkpointing every step (see the module docs)."""

    kind = "optimize"
    input_role = "jobs"
    input_model = OptimizeJob  # the runtime decodes every job message kind; see _runtime

    candidates: CandidateCache | None = None
    client: Client | None = None
    blobs: BlobReader | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cancels: dict[str, asyncio.Event] = {}
        # What the steps in progress spent (heartbeats list it until their checkpoints are in) ...
        self.unreported = UnreportedLedger()
        self._steps: dict[str, StepSpend] = {}
        # ... and, per job, what owners killed mid-step had listed (death key -> usage)
        self._dead_spend: dict[str, dict[str, UsageRecord]] = {}

    async def open_caches(self, stack: AsyncExitStack) -> None:
        cache = CandidateCache(
            self.settings,
            self.registry.name("candidates"),
            policy=self.options.policy,
            lms=self.lms,
            wait_s=self.options.candidate_wait_s,
        )
        self.candidates = await stack.enter_async_context(cache)
        # the large values of a job's examples (dspex.streams.blobs): read only when a job names one
        self.blobs = await stack.enter_async_context(BlobReader(self.settings, self.registry.name("blobs")))
        self.client = Client(kafka=self.settings, prefix=self.options.prefix)
        stack.push_async_callback(self.client.aclose)

    def _runtime(self, producer: AsyncProducer) -> ConsumerRuntime:
        options = self.options.consumer_options(
            group_id=self.group_id,
            topics=[self.registry.name("jobs")],
            dlq_topic=self.registry.name("dlq"),
            worker_id=self.worker_id,
            drain_timeout=_RELEASE_S,
        )
        return ConsumerRuntime(
            self.settings,
            options,
            handler=self._handle,
            producer=producer,
            decoder=_decode_job,
            on_dead_letter=self._account_dead_letter,
        )

    async def handle(self, message: Message, value: Any) -> Outcome:
        if isinstance(value, Cancel):
            event = self._cancels.get(value.job_id)
            if event is not None:
                event.set()
            return "ok" if event is not None else "skipped"
        if not isinstance(value, OptimizeJob):
            return "skipped"  # evaluations are the predictors' and the aggregator's
        await self.optimize(value)
        return "ok"

    # ---------------------------------------------------------------- one optimization

    async def optimize(self, job: OptimizeJob) -> None:
        """Run (or resume) ``job`` to its end, publishing after every step."""
        cancel = self._cancels.setdefault(job.job_id, asyncio.Event())
        if self.jobs is not None and self.jobs.stop_reason(job.job_id) == "cancelled":
            cancel.set()
        started = utc_now()
        run: OptimizerRun | None = None
        tracking.begin_optimization(job.optimizer, job.job_id)  # --mlflow-uri: one run per job, resumed too
        try:
            run, lm = await self._begin(job)
            await self._publish(job, run, "running", started)
            with context(lm=lm):
                while not run.done:
                    with self._step_spend(job.job_id):  # listed in heartbeats until checkpointed
                        await _until_cancelled(run.step(), cancel)
                        await self._after_step(job, run, started)
                    await self._unlist_step()
            await self._publish(
                job, run, "completed", started, reason=run.history.stopped, stop_reason=budget_stop(run)
            )
        except _Cancelled:
            await _cancel_training(run)
            await self._publish(
                job, run, "cancelled", started, reason=self._cancel_reason(job), stop_reason="cancelled"
            )
        except DspexError as exc:
            logger.warning("optimization %s failed: %s", job.job_id, exc)
            reason = getattr(exc, "reason", None) or str(exc)
            stop = failure_stop(exc, begun=run is not None)
            await self._publish(job, run, "failed", started, reason=reason, stop_reason=stop)
        except Exception as exc:  # a bug, not bad input: the job still ends, with the reason
            logger.exception("optimization %s failed unexpectedly", job.job_id)
            await self._publish(job, run, "failed", started, reason=f"{type(exc).__name__}: {exc}")
        finally:
            self._cancels.pop(job.job_id, None)
            self._dead_spend.pop(job.job_id, None)

    @contextlib.contextmanager
    def _step_spend(self, job_id: str) -> Iterator[StepSpend]:
        with StepSpend(self.unreported, job_id) as spend:
            self._steps[job_id] = spend
            try:
                yield spend
            finally:
                self._steps.pop(job_id, None)

    async def _unlist_step(self) -> None:
        # A heartbeat still listing a checkpointed step would count it twice if this worker died
        # before the next regular one: say at once that it is charged.
        if self.heartbeats is not None:
            await self.heartbeats.send_now()

    def _spent(self, job_id: str, usage: Usage) -> None:
        spend = self._steps.get(job_id)
        if spend is not None:
            spend.add(usage)

    def heartbeat(self) -> WorkerHeartbeat:
        """The common heartbeat, with what the steps in progress spent per optimization."""
        return super().heartbeat().model_copy(update={"unreported": self.unreported.snapshot()})

    async def _begin(self, job: OptimizeJob) -> tuple[OptimizerRun, Any]:
        if self.candidates is None or self.client is None:
            raise ConfigurationError("the optimize worker is not running")
        student = (await self.candidates.program(job.candidate_id)).deepcopy()
        lm = self.lms.for_spec(job.lm) if job.lm is not None else None
        metric = metric_of(job.metric, self.options.policy.modules)
        optimizer = _optimizer(job, metric)
        bind_lms = getattr(optimizer, "bind_worker_lms", None)
        if bind_lms is not None:
            bind_lms(self.lms)  # the optimizer's own LMs (GEPA's reflection LM) under this worker's policy
        check_compile_options(optimizer, job.compile_options)  # a job not built by dspex.Client
        checkpoint = await self._checkpoint(job.job_id)
        trainset = await resolved_examples("trainset", job.trainset, self.blobs)
        valset = await resolved_examples("valset", job.valset, self.blobs) if job.valset is not None else None
        run: OptimizerRun = optimizer.start(
            student,
            trainset=trainset,
            valset=valset,
            executor=executor_for(self.client, job, lambda usage: self._spent(job.job_id, usage)),
            state=checkpoint.state if checkpoint is not None else None,
            **start_options(optimizer, metric),
            **job.compile_options,
        )
        if checkpoint is not None:
            logger.info("optimization %s resumes after step %s", job.job_id, checkpoint.step)
        await self._note_dead_owners(job, checkpoint)
        return run, lm

    async def _note_dead_owners(self, job: OptimizeJob, checkpoint: OptimizerCheckpoint | None) -> None:
        """What earlier owners killed mid-step had spent on their unfinished steps (the
        checkpoint's record of earlier deaths, and the workers topic's latest heartbeats)."""
        reader: CompactedReader[WorkerHeartbeat] = CompactedReader(
            self.settings, self.registry.name("workers"), decoder=WorkerHeartbeat
        )
        async with reader:
            await reader.wait_caught_up(_CHECKPOINT_READ_S)
            beats = reader.snapshot()
        found = dead_owners_spend(beats, job.job_id, me=death_key(self.heartbeat()))
        for key, usage in found.items():
            logger.warning(
                "optimize worker %s died mid-step (killed?): up to %s LM calls of optimization %s "
                "are not charged (reported as usage_unreported)",
                key, usage.lm_calls, job.job_id,
            )  # fmt: skip
        earlier = checkpoint.unreported if checkpoint is not None else {}
        self._dead_spend[job.job_id] = {**found, **earlier}

    async def _checkpoint(self, job_id: str) -> OptimizerCheckpoint | None:
        # A fresh reader to the end of the topic: whatever the previous owner had acknowledged is in.
        reader: CompactedReader[OptimizerCheckpoint] = CompactedReader(
            self.settings, self.registry.name("optimizer-state"), decoder=OptimizerCheckpoint
        )
        async with reader:
            await reader.wait_caught_up(_CHECKPOINT_READ_S)
            return reader.get(job_id)

    async def _after_step(self, job: OptimizeJob, run: OptimizerRun, started: Any) -> None:
        history = run.history
        checkpoint = OptimizerCheckpoint(
            job_id=job.job_id,
            step=run.step_index,
            optimizer=job.optimizer,
            state=run.state_dict(),
            history=_trials(run),
            best_candidate_id=history.best_candidate_id,
            best_score=history.best_score,
            usage=_usage(run),
            unreported=self._dead_spend.get(job.job_id, {}),
        )
        await self.produce("optimizer-state", checkpoint)  # acknowledged before anything else
        prometheus.optimizer_step(job.optimizer)
        if history.best_score is not None:
            prometheus.optimizer_best_score(job.job_id, history.best_score)
        await self._publish_best(job, run)
        await self._publish(job, run, "running", started)

    async def _publish_best(self, job: OptimizeJob, run: OptimizerRun) -> None:
        best_id = run.history.best_candidate_id
        if best_id is None:
            return
        program = dump_program(run.result())
        if candidate_id(program) != best_id:
            logger.debug("optimization %s: the result is not the best trial yet; not published", job.job_id)
            return
        label = f"best of {job.job_id} after step {run.step_index}"
        await self.produce("candidates", ProgramSpec.build(program, job_id=job.job_id, label=label))

    async def _publish(
        self,
        job: OptimizeJob,
        run: OptimizerRun | None,
        state: JobState,
        started: Any,
        *,
        reason: str | None = None,
        stop_reason: OptimizeStopReason | None = None,
    ) -> None:
        terminal = state != "running"
        best_id = run.history.best_candidate_id if run is not None else None
        if state == "completed" and run is not None:
            await self._publish_final(job, run)
            best_id = candidate_id(run.result())
        status = OptimizeStatus(
            job_id=job.job_id,
            name=job.name,
            state=state,
            optimizer=job.optimizer,
            steps=_trials(run) if run is not None else [],
            best_candidate_id=best_id,
            best_score=run.history.best_score if run is not None else None,
            usage=_usage(run) if run is not None else UsageRecord(),
            usage_unreported=total_unreported(self._dead_spend.get(job.job_id, {})),
            seq=(run.step_index if run is not None else 0) + int(terminal),
            started_at=started,
            finished_at=utc_now() if terminal else None,
            reason=reason,
            stop_reason=stop_reason,
        )
        await self.produce("status", status)
        if not terminal:
            tracking.log_optimization_progress(status)  # --mlflow-uri: the trials so far, as steps
        if terminal:
            prometheus.optimizer_ended(job.job_id)  # per-job series only while the job runs
            best = run.result() if state == "completed" and run is not None else None
            tracking.log_optimization(status, best, knobs=job.knobs, seed=job.seed)

    async def _publish_final(self, job: OptimizeJob, run: OptimizerRun) -> None:
        program = dump_program(run.result())
        label = f"result of {job.job_id}"
        await self.produce("candidates", ProgramSpec.build(program, job_id=job.job_id, label=label))

    def _cancel_reason(self, job: OptimizeJob) -> str:
        return f"cancelled while optimizing (job {job.job_id})"


async def _until_cancelled(step: Any, cancel: asyncio.Event) -> None:
    """Await ``step`` unless ``cancel`` is set first (then the step is abandoned)."""
    if cancel.is_set():
        step.close()
        raise _Cancelled
    stepping = asyncio.ensure_future(step)
    waiting = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({stepping, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stepping, waiting):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if not stepping.cancelled() and stepping.done():
        stepping.result()  # the step's own exception, if any
        return
    raise _Cancelled


async def _cancel_training(run: OptimizerRun | None) -> None:
    """A cancelled optimization also cancels what it started at a provider (BootstrapFinetune's
    fine-tuning jobs); a failure to do so is logged, the optimization is cancelled all the same."""
    cancel = getattr(run, "acancel_training", None)
    if cancel is None:
        return
    try:
        await cancel()
    except Exception:
        logger.warning("could not cancel the optimization's fine-tuning jobs", exc_info=True)


def _optimizer(job: OptimizeJob, metric: Callable[..., Any]) -> Any:
    """The job's optimizer: its knobs, with the job's seed, limits and metric where it takes them."""
    offered = {
        "metric": metric,
        "seed": job.seed,
        "max_errors": job.max_errors,
        "max_lm_calls": job.max_lm_calls,
        "max_cost_usd": job.max_cost_usd,
    }
    return cluster_optimizer(job.optimizer, job.knobs, offered)


def budget_stop(run: OptimizerRun) -> OptimizeStopReason | None:
    """The budget that ended a completed run, None for one that ran to its end (or reached its
    target score). The run's history says "budget: ..." when a budget stopped it; of two budgets,
    the one more used up is the one that bound."""
    if not (run.history.stopped or "").startswith("budget"):
        return None
    budget = run.budget
    calls = _share(budget.calls, budget.max_lm_calls)
    cost = _share(budget.spent.cost_usd, budget.max_cost_usd)
    if calls is None and cost is None:
        return None
    return "max_lm_calls" if cost is None or (calls is not None and calls >= cost) else "max_cost"


def _share(spent: float, limit: float | None) -> float | None:
    if limit is None:
        return None
    return spent / limit if limit > 0 else float("inf")


def failure_stop(exc: DspexError, *, begun: bool) -> OptimizeStopReason | None:
    """Why an optimization failed, typed: ``invalid_submit`` for a job that cannot even start as
    given (optimizer, knobs, metric, examples, student), ``max_errors``, ``systemic`` for an error
    every run would repeat (a bad key, an unknown model); None for anything else."""
    if not begun and isinstance(exc, ConfigurationError | MetricError | ProgramLoadError):
        return "invalid_submit"
    if isinstance(exc, OptimizerError):
        return "max_errors"
    if isinstance(exc, ConfigurationError | ProgramLoadError) or (isinstance(exc, LMError) and exc.systemic):
        return "systemic"
    return None


def _trials(run: OptimizerRun) -> list[TrialRecord]:
    return [TrialRecord(**trial.as_trial_record()) for trial in run.history.trials]


def _usage(run: OptimizerRun) -> UsageRecord:
    return UsageRecord(**run.history.usage.model_dump())


def _decode_job(message: Message) -> Any:
    return decode(message.value(), JobMessage)
