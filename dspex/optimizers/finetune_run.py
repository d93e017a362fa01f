"""BootstrapFinetune's step-by-step run: teacher traces, fine-tuning jobs, the tuned program.

    run = optimizer.start(student, trainset=train)           # or state=checkpoint
    while not run.done:
        await run.step()
        checkpoint = run.state_dict()                        # JSON, after every step
    tuned = run.result()

The steps:

1. ``gather``: every teacher runs on the trainset through the run's executor (so, in a cluster, on
   the predictors); each run's trace is scored by the metric and the passing ones become each LM's
   training records (the adapter's ``format_finetune_data``), which the checkpoint keeps;
2. ``train``: each LM's fine-tuning job is started (``lm.finetune``); the step ends once the
   provider named the job, so the checkpoint holds the training file id and the job id;
3. ``wait`` (as many steps as it takes, each at most ``wait_step_s``): the jobs' ends; a failed job
   ends the run with its :class:`~dspex.errors.FinetuneError` (the provider's reason), never a
   program with an untuned model;
4. ``evaluate`` (with a valset and a metric): the tuned program, scored once.

A run resumed from the checkpoint of step 2 or 3 starts no second job: it starts the same job
again (the same records, model and settings), which dspex's OpenAI-compatible provider answers by
re-attaching to the job it finds with that data's key in its metadata (see
:mod:`dspex.lm.finetune.openai`); the job id it re-attached to is checked against the checkpoint's.
A job's training cost is charged to the run's budget by the step that sees it end.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from dspex._sync import run_in_thread
from dspex.errors import ConfigurationError, FinetuneError
from dspex.lm.usage import Usage, record_usage
from dspex.metrics import score_of
from dspex.optimizers._base import OptimizerRun, StepCost
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import CheckpointModel
from dspex.optimizers.executor import Executor
from dspex.optimizers.history import Trial
from dspex.primitives import Example, Module, Prediction
from dspex.serialization import candidate_id

if TYPE_CHECKING:
    from dspex.optimizers.finetune import BootstrapFinetune

__all__ = ["FinetuneJobState", "FinetuneRun", "FinetuneState"]

logger = logging.getLogger(__name__)

FinetunePhase = Literal["gather", "train", "wait", "evaluate"]
_NAMED_POLL_S = 0.05  # how often a step looks at its jobs (named yet? ended?)


class FinetuneJobState(CheckpointModel):
    """One LM's fine-tuning job: its records until the job is named, the provider's ids, the result."""

    records: list[dict[str, Any]]
    data_format: str = "chat"
    file_id: str | None = None
    job_id: str | None = None
    model: str | None = None  # the tuned LM's model, once the job succeeded
    cost_usd: float | None = None


class FinetuneState(CheckpointModel):
    """BootstrapFinetune: the phase, the teacher runs' tally and every LM's job."""

    phase: FinetunePhase
    runs: int = Field(default=0, ge=0)
    passed: int = Field(default=0, ge=0)
    jobs: list[FinetuneJobState] = Field(default_factory=list)


@dataclass
class _Group:
    """The predictors one job tunes: the LM and, without ``multitask``, the one predictor."""

    lm: Any
    key: Any  # the LM as given (``lm`` may be its copy with the run's provider)
    predictor: int | None
    members: list[int]
    state: FinetuneJobState | None = None
    job: Any = None  # the provider's TrainingJob (or any object with result()) while it runs
    tuned: Any = None
    seen_id: str | None = field(default=None)


class FinetuneRun(OptimizerRun):
    """One BootstrapFinetune optimization in progress (see the module); built by
    :meth:`BootstrapFinetune.start`."""

    state_model = FinetuneState

    def __init__(
        self,
        optimizer: BootstrapFinetune,
        student: Module,
        teachers: Sequence[Module],
        trainset: Sequence[Example],
        valset: Sequence[Example] | None,
        lms: Sequence[Any],
        given: Sequence[Any],
        *,
        executor: Executor,
        budget: Budget,
        max_errors: int | None,
    ) -> None:
        super().__init__(name="BootstrapFinetune", executor=executor, budget=budget, max_errors=max_errors)
        self.optimizer = optimizer
        self.student = student
        self.teachers = list(teachers)
        self.trainset = list(trainset)
        self.valset = list(valset) if valset else None
        # ``given``: each predictor's LM as the caller gave it, which keys train_kwargs and adapter
        self.groups = _groups(lms, given, optimizer.multitask)
        self.phase: FinetunePhase = "gather"
        self.runs = self.passed = 0
        self.program: Module | None = None

    # -- the steps ---------------------------------------------------------------------------------

    async def _step(self) -> StepCost:
        if self.phase == "gather":
            return await self._gather()
        if self.phase == "train":
            await self._train()
            return StepCost()
        if self.phase == "wait":
            await self._wait()
            return StepCost()
        return await self._evaluate()

    async def _gather(self) -> StepCost:
        entries: list[dict[str, Any]] = []
        usage, errors, last = Usage(), 0, None
        for teacher in self.teachers:
            preds = await self.executor.run(teacher, self.trainset)
            paths = dict(teacher.named_predictors())
            for index, (example, pred) in enumerate(zip(self.trainset, preds, strict=True)):
                if isinstance(pred, Exception):
                    errors, last = errors + 1, f"{type(pred).__name__}: {pred}"
                    continue
                usage += pred.usage
                entry, error = await self._entry(index, example, pred, paths)
                if error is not None:
                    errors, last = errors + 1, error
                elif entry is not None:
                    entries.append(entry)
        self.runs = len(self.teachers) * len(self.trainset)
        self.passed = len(entries)
        self.errors += errors
        self.check_errors(self.errors, last)
        self._prepare_jobs(entries)
        self.record(
            Trial(
                step=self.step_index, kind="bootstrap", label="teacher traces", num_examples=self.runs,
                note=f"{self.passed} of {self.runs} teacher runs passed the metric; "
                f"{sum(len(g.state.records) for g in self.groups if g.state)} training records",
            )
        )  # fmt: skip
        self.phase = "train"
        return StepCost(runs=self.runs, reported=usage)

    async def _entry(
        self, index: int, example: Example, pred: Prediction, paths: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The trace data of one run (None when it failed the metric), or the metric's error."""
        trace = [
            (paths.get(step.predictor_path, step.predictor), dict(step.inputs), Prediction(**step.outputs))
            for step in pred.trace or []
        ]
        metric = self.optimizer.metric
        if metric is None:
            return {"example_ind": index, "example": example, "prediction": pred, "trace": trace}, None
        try:
            value = metric(example, pred, trace)
            score, _ = score_of(await value if inspect.isawaitable(value) else value)
        except Exception as exc:
            return None, f"metric: {type(exc).__name__}: {exc}"
        entry = {"example_ind": index, "example": example, "prediction": pred, "trace": trace, "score": score}
        return (entry if score else None), None

    def _prepare_jobs(self, entries: Sequence[Mapping[str, Any]]) -> None:
        for group in self.groups:
            data, data_format = self.optimizer._prepare_finetune_data(entries, group.key, group.predictor)
            if not data:
                raise ConfigurationError(
                    f"no training data for {getattr(group.lm, 'model', group.lm)}: none of the "
                    f"{self.runs} teacher runs passed the metric; nothing was uploaded"
                )
            logger.info("%d examples to fine-tune %s on", len(data), getattr(group.lm, "model", group.lm))
            group.state = FinetuneJobState(records=list(data), data_format=data_format)

    async def _train(self) -> None:
        if self.optimizer.finetune_lms_replaced():
            await self._train_through_finetune_lms()
            return
        for group in self.groups:
            if group.job is None and _state(group).model is None:
                self._start_job(group)
        await self._until_named()
        self.record(
            Trial(step=self.step_index, kind="finetune", label="fine-tuning jobs started",
                  note="; ".join(_describe(g) for g in self.groups))
        )  # fmt: skip
        self.phase = "wait"

    async def _train_through_finetune_lms(self) -> None:
        """Train with the optimizer's own ``finetune_lms`` (a subclass's, or one set on the object),
        as DSPy 3.4.1 does: one call with every job keyed ``(lm, predictor index or None)``, which
        answers ``{key: tuned LM}``. The wait step then only finishes the program."""
        jobs: dict[tuple[Any, int | None], dict[str, Any]] = {}
        for group in self.groups:
            state = _state(group)
            jobs[(group.key, group.predictor)] = {
                "lm": group.lm,
                "train_data": list(state.records),
                "train_data_format": state.data_format,
                "train_kwargs": self.optimizer.train_kwargs[group.key],
            }
        tuned = await run_in_thread(self.optimizer.finetune_lms, jobs)
        for group in self.groups:
            key = (group.key, group.predictor)
            if key not in tuned:
                raise ConfigurationError(f"finetune_lms returned no tuned LM for {_model(group.key)!r}")
            group.tuned = tuned[key]
            group.state = _state(group).model_copy(update={"model": str(_model(group.tuned)), "records": []})
        self.record(
            Trial(step=self.step_index, kind="finetune", label="fine-tuned by finetune_lms",
                  note="; ".join(_describe(g) for g in self.groups))
        )  # fmt: skip
        self.phase = "wait"

    def _start_job(self, group: _Group) -> None:
        lm, state = group.lm, _state(group)
        if not callable(getattr(lm, "finetune", None)):
            raise ConfigurationError(
                f"{lm!r} cannot be fine-tuned: it has no fine-tuning API; give the predictors an LM "
                "that implements finetune(train_data, train_data_format, train_kwargs)"
            )
        _call_if_present(lm, "kill")  # a local model frees its resources for training
        # A context of its own: the job's thread outlives this step, whose usage trackers would
        # hear its training cost after they were read; the step that sees the job end charges it.
        group.job = contextvars.Context().run(
            lm.finetune,
            train_data=list(state.records),
            train_data_format=state.data_format,
            train_kwargs=self.optimizer.train_kwargs[group.key],
        )

    async def _until_named(self) -> None:
        """Wait until every running job has its provider id (or ended), and keep the ids."""
        while True:
            waiting = [g for g in self.groups if g.job is not None and not _named(g.job)]
            if not waiting:
                break
            await asyncio.sleep(_NAMED_POLL_S)
        for group in self.groups:
            self._keep_ids(group)

    def _keep_ids(self, group: _Group) -> None:
        job, state = group.job, _state(group)
        job_id = getattr(job, "provider_job_id", None)
        if job is None or job_id is None:
            return
        if state.job_id is not None and state.job_id != job_id:
            logger.warning(
                "fine-tuning of %s: the checkpoint names job %s, the provider's is %s",
                getattr(group.lm, "model", group.lm), state.job_id, job_id,
            )  # fmt: skip
        elif state.job_id is not None and group.seen_id != job_id:
            logger.info(
                "fine-tuning of %s: re-attached to job %s", getattr(group.lm, "model", group.lm), job_id
            )
        group.seen_id = job_id
        file_id = getattr(job, "provider_file_id", None) or state.file_id
        # once the provider holds the data, the checkpoint needs the ids only
        group.state = state.model_copy(update={"job_id": job_id, "file_id": file_id})

    async def _wait(self) -> None:
        running = [g for g in self.groups if _state(g).model is None]
        for group in running:
            if group.job is None:  # a resumed run: the same job again, which re-attaches
                self._start_job(group)
        await self._until_named()
        await _first_of([g.job for g in running], self.optimizer.wait_step_s)
        for group in running:
            if _done(group.job):
                await self._collect(group)
        if all(_state(g).model is not None for g in self.groups):
            self._finish()
            note = "; ".join(_describe(g) for g in self.groups)
            self.record(
                Trial(step=self.step_index, kind="finetune", label="fine-tuning jobs ended",
                      candidate_id=candidate_id(self.result()), note=note)
            )  # fmt: skip
            if self.valset is not None and self.optimizer.metric is not None:
                self.phase = "evaluate"
            else:
                self.done = True

    async def _collect(self, group: _Group) -> None:
        job = group.job
        try:
            tuned = await run_in_thread(job.result)
        except FinetuneError as exc:
            self.history.stopped = f"failed: {exc}"
            raise
        if isinstance(tuned, Exception):  # a DSPy-style job that hands its failure back
            self.history.stopped = f"failed: {tuned}"
            raise FinetuneError(f"fine-tuning {getattr(group.lm, 'model', group.lm)} failed: {tuned}",
                                reason=str(tuned)) from tuned  # fmt: skip
        cost = getattr(job, "cost_usd", None)
        if cost:
            record_usage(Usage(cost_usd=float(cost)))
        group.tuned = tuned
        group.job = None
        group.state = _state(group).model_copy(
            update={"model": str(getattr(tuned, "model", tuned)), "cost_usd": cost, "records": []}
        )

    async def _evaluate(self) -> StepCost:
        program = self.result()
        assert self.valset is not None  # the phase exists only with one
        [result] = await self.executor.evaluate_many(
            [program], self.valset, self.optimizer.metric, max_errors=self.max_errors
        )
        self.record(
            Trial(step=self.step_index, kind="full", label="fine-tuned program",
                  candidate_id=candidate_id(program), score=result.score, num_examples=result.processed)
        )  # fmt: skip
        self.done = True
        return StepCost(runs=len(self.valset), reported=result.usage)

    async def acancel_training(self) -> list[str]:
        """Cancel the fine-tuning jobs this process has running (the optimization was cancelled):
        the ids of the jobs a cancel was sent for. A job this process has not re-attached to yet
        (a resumed run before its wait step) is not known here and keeps running."""
        sent = []
        for group in self.groups:
            job = group.job
            if isinstance(job, Future) and not job.done() and await run_in_thread(job.cancel):
                sent.append(str(getattr(job, "provider_job_id", None) or "not started"))
        if sent:
            logger.info("%s: fine-tuning job(s) cancelled: %s", self.history.optimizer, ", ".join(sent))
        return sent

    # -- the result --------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The student with the tuned LMs (stopped before every job ended: the student as it is)."""
        if not all(g.tuned is not None for g in self.groups):
            return
        program = self.student
        predictors = program.predictors()
        for group in self.groups:
            for index in group.members:
                predictors[index].lm = group.tuned
                if self.optimizer.exclude_demos:
                    predictors[index].demos = []
        program._compiled = True
        self.program = program

    def result(self) -> Module:
        """The program with its fine-tuned LMs (the student until every job has ended)."""
        return self.program if self.program is not None else self.student

    # -- state -------------------------------------------------------------------------------------

    def _state(self) -> FinetuneState:
        jobs = [g.state for g in self.groups if g.state is not None]
        return FinetuneState(phase=self.phase, runs=self.runs, passed=self.passed, jobs=jobs)

    def _load_state(self, state: FinetuneState) -> None:
        if state.jobs and len(state.jobs) != len(self.groups):
            raise ConfigurationError(
                f"this optimizer checkpoint has {len(state.jobs)} fine-tuning job(s); this run makes "
                f"{len(self.groups)}"
            )
        self.phase, self.runs, self.passed = state.phase, state.runs, state.passed
        for group, job in zip(self.groups, state.jobs, strict=False):
            group.state = job
            if job.model is not None:
                group.tuned = _tuned_lm(group.lm, job.model)
        if all(g.tuned is not None for g in self.groups):
            self._finish()


# --------------------------------------------------------------------------- helpers


def _groups(lms: Sequence[Any], given: Sequence[Any], multitask: bool) -> list[_Group]:
    """One group per distinct LM (``multitask``), else one per predictor, in predictor order."""
    if not multitask:
        return [
            _Group(lm, key, index, [index]) for index, (lm, key) in enumerate(zip(lms, given, strict=True))
        ]
    groups: dict[int, _Group] = {}
    for index, (lm, key) in enumerate(zip(lms, given, strict=True)):
        groups.setdefault(id(lm), _Group(lm, key, None, [])).members.append(index)
    return list(groups.values())


def _state(group: _Group) -> FinetuneJobState:
    if group.state is None:
        raise ConfigurationError("the fine-tuning data is not gathered yet (a checkpoint without its jobs)")
    return group.state


def _named(job: Any) -> bool:
    """Whether the provider named the job (or it ended, or it is a job without provider ids)."""
    if not isinstance(job, Future):
        return True
    return job.done() or getattr(job, "provider_job_id", None) is not None


def _done(job: Any) -> bool:
    return not isinstance(job, Future) or job.done()


async def _first_of(jobs: Sequence[Any], timeout: float) -> None:
    """Until every job ended, one failed, or ``timeout`` seconds passed. Polled: an asyncio
    wrapper of a job would cancel the provider's job when the step is cancelled."""
    futures = [job for job in jobs if isinstance(job, Future)]
    deadline = asyncio.get_running_loop().time() + timeout
    while futures and asyncio.get_running_loop().time() < deadline:
        if all(f.done() for f in futures) or any(f.done() and f.exception() for f in futures):
            return
        await asyncio.sleep(_NAMED_POLL_S)


def _describe(group: _Group) -> str:
    state = group.state
    model = getattr(group.lm, "model", group.lm)
    if state is None:
        return f"{model}: no data"
    if state.model is not None:
        return f"{model}: {state.model}"
    ids = ", ".join(
        f"{name} {value}" for name, value in (("job", state.job_id), ("file", state.file_id)) if value
    )
    return f"{model}: {ids or 'started'}"


def _model(lm: Any) -> Any:
    return getattr(lm, "model", lm)


def _tuned_lm(lm: Any, model: str) -> Any:
    """The tuned LM a checkpoint names: ``lm`` with its model changed (dspex's LM, or any with
    ``copy(model=...)``)."""
    copy = getattr(lm, "copy", None)
    if not callable(copy):
        raise ConfigurationError(
            f"this checkpoint names the tuned model {model!r}, but {lm!r} cannot be copied to it"
        )
    return copy(model=model)


def _call_if_present(lm: Any, name: str) -> None:
    method = getattr(lm, name, None)
    if callable(method):
        method()
