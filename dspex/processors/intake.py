"""The intake worker: self-contained submit messages in, candidates + job + tasks out.

Any producer (Kafka's console producer, another language's client) can start an evaluation with
one :class:`~dspex.schemas.SubmitJob` on ``<prefix>submit`` (key: its job id). The intake worker
(``dspex worker intake``, consumer group ``<prefix>intake``) checks it with the Python client's own
code (:func:`dspex.client.build_submission`) and publishes what the client publishes, in
the client's order (:func:`dspex.client.publish`): large values to the blobs topic, the
candidate, the EvalJob, then one task per example, with the ids :mod:`dspex.ids` gives. So a job
submitted either way runs, reads and reports alike.

* Idempotent: a submit message whose job is already on the jobs topic (a redelivery, or the same
  message produced twice) publishes nothing.
* Bad input: a message that does not decode, or that the checks refuse (unknown metric, a program
  that does not load, code or an LM the worker does not allow), goes to the DLQ with the reason,
  and its job (the message's key, or its ``job_id``) gets a ``failed`` status with stop reason
  ``invalid_submit`` and that reason, shown by ``dspex status``.
* Tasks that never arrive: every ``sweep_interval_s`` the worker looks at the evaluations on the jobs
  topic (however they were submitted); one with no status after ``tasks_timeout_s``, or still with
  nothing done, is failed with stop reason ``tasks_missing`` (a Cancel saying so, which the
  aggregator turns into the failed status).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

from confluent_kafka import Message

from dspex.client import Limits, Policy, Submission, build_submission, publish
from dspex.errors import ConfigurationError, DspexError, PoisonMessageError, SecurityPolicyError
from dspex.primitives import Example
from dspex.processors.common import Outcome, Worker, WorkerOptions
from dspex.schemas.base import utc_now
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY, DeadLetter
from dspex.schemas.jobs import Cancel, EvalJob
from dspex.schemas.programs import ProgramSpec
from dspex.schemas.status import TERMINAL_STATES, JobStatus
from dspex.schemas.submit import DEFAULT_TASKS_TIMEOUT_S, SubmitJob
from dspex.streams.blobs import BlobWriter
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader

__all__ = [
    "DEFAULT_TASKS_TIMEOUT_S",
    "DLQ_REASON_INVALID_SUBMIT",
    "Intake",
    "expand",
    "invalid_submit_status",
    "submit_job_id",
]

logger = logging.getLogger(__name__)

DLQ_REASON_INVALID_SUBMIT = "invalid_submit"  # a submit message the checks refuse
DEFAULT_SWEEP_INTERVAL_S = 5.0


def expand(submit: SubmitJob, program: Mapping[str, Any], *, policy: Policy) -> Submission:
    """What the Python client would publish for ``submit`` with ``program`` (its JSON).

    Raises the client's errors (ConfigurationError, MetricError, InputError, SecurityPolicyError,
    ProgramLoadError) for anything it would refuse.
    """
    keys = submit.input_keys
    devset = []
    for index, row in enumerate(submit.examples):
        missing = [key for key in keys if key not in row]
        if missing:
            raise ConfigurationError(f"example {index} lacks the input field(s) {', '.join(missing)}")
        devset.append(Example(**row).with_inputs(*keys))
    limits = Limits(
        name=submit.name,
        failure_score=submit.failure_score,
        max_errors=submit.max_errors,
        max_cost_usd=submit.max_cost_usd,
        source=submit.source,
        priority=submit.priority,
        num_threads=submit.num_threads,
        lm_mode="batch" if submit.mode == "batch" else None,  # as the client's lm_mode(mode)
    )
    submission = build_submission(
        [program], devset, submit.metric, policy=policy, limits=limits, job_id=submit.job_id
    )
    if submit.lm is None:
        return submission
    # the submit message's LM stands where the client's context LM would
    return replace(submission, job=submission.job.model_copy(update={"lm": submit.lm}))


def submit_job_id(key: bytes | None, value: bytes | None) -> str | None:
    """The job a submit message names: its key, else the ``job_id`` of its JSON (None: neither)."""
    if key:
        with contextlib.suppress(UnicodeDecodeError):
            return key.decode("utf-8")
    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def invalid_submit_status(job_id: str, reason: str) -> JobStatus:
    """The terminal status of a job whose submit message was refused."""
    now = utc_now()
    return JobStatus(
        job_id=job_id,
        state="failed",
        total_tasks=0,
        started_at=now,
        updated_at=now,
        finished_at=now,
        reason=reason,
        stop_reason="invalid_submit",
    )


class Intake(Worker):
    """Expands submit messages (see the module docs)."""

    kind = "intake"
    input_role = "submit"
    input_model = SubmitJob

    def __init__(
        self,
        settings: KafkaSettings,
        options: WorkerOptions | None = None,
        *,
        tasks_timeout_s: float = DEFAULT_TASKS_TIMEOUT_S,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
    ) -> None:
        super().__init__(settings, options)
        if tasks_timeout_s <= 0 or sweep_interval_s <= 0:
            raise ConfigurationError("the tasks timeout and the sweep interval must be > 0 seconds")
        self.tasks_timeout_s = tasks_timeout_s
        self.sweep_interval_s = sweep_interval_s
        self._candidates: CompactedReader[Any] | None = None
        self._blobs = BlobWriter()
        self._expanded: set[str] = set()  # jobs published here, before the job cache reads them back
        self._timed_out: set[str] = set()
        self._lock = asyncio.Lock()

    async def open_caches(self, stack: AsyncExitStack) -> None:
        """Follow the candidates topic (for submit messages naming a candidate) and sweep for jobs
        whose tasks never arrived."""
        reader: CompactedReader[Any] = CompactedReader(
            self.settings, self.registry.name("candidates"), decoder=ProgramSpec
        )
        self._candidates = await stack.enter_async_context(reader)
        sweeper = asyncio.create_task(self._sweep_forever(), name="dspex-intake-sweep")
        stack.push_async_callback(_cancel, sweeper)

    def _policy(self) -> Policy:
        # Modules are checked by build_submission; LMs by the worker's own policy (loopback default).
        return Policy(allow_modules=self.options.policy.modules)

    # ---------------------------------------------------------------- submit messages

    async def handle(self, message: Message, value: Any) -> Outcome:
        submit: SubmitJob = value
        async with self._lock:  # two copies of one submission in flight: the second sees the first
            if self._known(submit.job_id):
                logger.info("job %s is already on the jobs topic; submit message skipped", submit.job_id)
                return "skipped"
            submission = await self._expand(submit)
            self._expanded.add(submit.job_id)
        if self.producer is None:
            raise ConfigurationError("the intake worker is not running")
        try:
            await publish(self.producer, self.registry, submission, self._blobs)
        except BaseException:
            # retried (or redelivered): published again unless the job record got out and is read
            self._expanded.discard(submit.job_id)
            raise
        logger.info(
            "job %s submitted: %d candidate(s), %d task(s)",
            submit.job_id,
            len(submission.job.candidate_ids),
            submission.job.total_tasks,
        )
        return "ok"

    def _known(self, job_id: str) -> bool:
        jobs = self.jobs
        return job_id in self._expanded or (jobs is not None and jobs.job(job_id) is not None)

    async def _expand(self, submit: SubmitJob) -> Submission:
        try:
            program = submit.program if submit.program is not None else await self._program(submit)
            submission = expand(submit, program, policy=self._policy())
            self._check_lms(submission)
        except SecurityPolicyError as exc:
            raise PoisonMessageError(f"submit refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY) from exc
        except PoisonMessageError:
            raise
        except DspexError as exc:
            raise PoisonMessageError(f"invalid submit: {exc}", reason=DLQ_REASON_INVALID_SUBMIT) from exc
        if submit.candidate_id is not None:  # already published: not written again under this job
            submission = replace(submission, specs=[])
        return submission

    async def _program(self, submit: SubmitJob) -> dict[str, Any]:
        assert self._candidates is not None and submit.candidate_id is not None
        try:
            spec: ProgramSpec = await self._candidates.wait_for(
                submit.candidate_id, self.options.candidate_wait_s
            )
        except TimeoutError:
            raise PoisonMessageError(
                f"invalid submit: candidate {submit.candidate_id} is not on "
                f"{self.registry.name('candidates')} (waited {self.options.candidate_wait_s:g} s)",
                reason=DLQ_REASON_INVALID_SUBMIT,
            ) from None
        return dict(spec.program)

    def _check_lms(self, submission: Submission) -> None:
        policy = self.options.policy
        lm = submission.job.lm
        if lm is not None and lm.api_base is not None:
            policy.check_lm(lm.api_base, lm.api_key_env)
        for spec in submission.specs:
            for settings in _program_lms(spec.program):
                api_base = settings.get("api_base")
                key_env = settings.get("api_key_env")
                if isinstance(api_base, str):
                    policy.check_lm(api_base, key_env if isinstance(key_env, str) else None)

    # ---------------------------------------------------------------- refused messages

    async def _account_dead_letter(self, letter: DeadLetter) -> None:
        """Fail the job a refused submit message names, unless that job exists already."""
        key = base64.b64decode(letter.key) if letter.key is not None else None
        value = base64.b64decode(letter.value) if letter.value is not None else None
        job_id = submit_job_id(key, value)
        logger.warning(
            "submit message for job %s dead-lettered (%s): %s", job_id, letter.reason, letter.error
        )
        if job_id is None or self._known(job_id):
            return  # a bad copy of a job that runs changes nothing
        reason = f"the submit message is invalid ({letter.reason}): {letter.error}"
        await self.produce("status", invalid_submit_status(job_id, reason))

    # ---------------------------------------------------------------- tasks that never arrive

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except DspexError as exc:  # Kafka away: the next round tries again
                logger.warning("tasks-missing sweep failed: %s", exc)

    async def sweep(self) -> list[str]:
        """Fail (``tasks_missing``) every evaluation with nothing done ``tasks_timeout_s`` after it
        was submitted; returns their ids."""
        failed = []
        for job in self._stale_jobs():
            reason = (
                f"no task of the job was done within {self.tasks_timeout_s:g} s of its submission: "
                "its tasks never arrived on the tasks topic (or no predictor ran them)"
            )
            await self.produce("jobs", Cancel(job_id=job.job_id, reason=reason, stop_reason="tasks_missing"))
            self._timed_out.add(job.job_id)
            failed.append(job.job_id)
            logger.warning("job %s failed: %s", job.job_id, reason)
        return failed

    def _stale_jobs(self) -> Iterator[EvalJob]:
        jobs = self.jobs
        if jobs is None:
            return
        deadline = utc_now() - timedelta(seconds=self.tasks_timeout_s)
        for job in jobs.eval_jobs():
            if job.job_id in self._timed_out or job.created_at > deadline or job.total_tasks == 0:
                continue
            if jobs.stop_reason(job.job_id) is not None or jobs.purged(job.job_id):
                continue  # a purged job has no status on purpose: failing it would write one
            status = jobs.status(job.job_id)
            if status is None or (getattr(status, "state", None) not in TERMINAL_STATES and not status.done):
                yield job


def _program_lms(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if isinstance(node.get("lm"), Mapping):
        yield node["lm"]
    for child in (node.get("children") or {}).values():
        if isinstance(child, Mapping):
            yield from _program_lms(child)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
