"""Values of the jobs topic (key: job_id): what was asked, with which metric, LM and limits."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from dspex.schemas.base import Message, Timestamp, WireModel, known_or_none, utc_now
from dspex.schemas.common import ExampleSet, LMSpec, MetricSpec, Priority

__all__ = ["Cancel", "DatasetSummary", "EvalJob", "JobMessage", "OptimizeJob", "PurgeJob"]


class DatasetSummary(WireModel):
    """What an evaluation ran over, for people reading status: not needed to run it."""

    name: str | None = None
    source: str | None = Field(default=None, description="Where it came from, e.g. a file path.")
    fingerprint: str | None = Field(default=None, description="Content id of the examples, when known.")
    input_keys: list[str] = Field(default_factory=list)


class EvalJob(Message):
    """Evaluate one or more candidates over ``num_examples`` examples with a metric.

    The tasks (one per candidate x example) go to the tasks topic; the job's total is
    ``len(candidate_ids) * num_examples``. ``lm`` is the LM in effect where the job was submitted
    (None: each program uses its own). Limits: ``max_errors`` failed examples, ``max_cost_usd``.
    ``priority`` (None: ``normal``) is the job's weight in the predictors' fair queues; every task
    of the job carries it too. ``max_in_flight`` (None: no cap of its own) is how many of its tasks
    may run at once in each predictor (``num_threads`` at submission, already clamped to what the
    live predictors allow); ``max_in_flight_asked`` is what was asked when that was more.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.2"  # 1.1: priority; 1.2: max_in_flight, max_in_flight_asked

    kind: Literal["eval"] = "eval"
    job_id: str
    name: str | None = Field(default=None, description="A label chosen by the user.")
    candidate_ids: list[str] = Field(min_length=1)
    metric: MetricSpec
    lm: LMSpec | None = None
    num_examples: int = Field(ge=0)
    failure_score: float = 0.0
    max_errors: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    dataset: DatasetSummary | None = None
    parent_job_id: str | None = Field(default=None, description="The optimization that asked for it.")
    priority: Priority | None = Field(default=None, description="Fair-share weight; None: normal.")
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Its tasks running at once per predictor."
    )
    max_in_flight_asked: int | None = Field(
        default=None,
        ge=1,
        description="The in-flight budget asked for, when it was clamped to max_in_flight.",
    )
    created_at: Timestamp = Field(default_factory=utc_now)

    # A priority a newer writer adds reads as None (normal) here instead of failing the whole job.
    _priority_tolerant = field_validator("priority", mode="wrap")(known_or_none)

    @property
    def total_tasks(self) -> int:
        """Candidates times examples."""
        return len(self.candidate_ids) * self.num_examples


class OptimizeJob(Message):
    """Optimize the program published as ``candidate_id`` with a named optimizer and its knobs.

    Budgets stop the run cleanly with the best program so far: ``max_lm_calls``, ``max_cost_usd``.
    ``seed`` makes the run reproducible, locally and through Kafka alike. ``evaluation_mode``
    ``"batch"``: the optimizer's evaluation jobs (``KafkaExecutor.evaluate_many``) run in batch mode
    (their LM calls through the provider's Batch API); the runs it makes for traces stay online.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.1"  # 1.1: evaluation_mode

    kind: Literal["optimize"] = "optimize"
    job_id: str
    name: str | None = None
    optimizer: str = Field(description='DSPy\'s name or ours, e.g. "BootstrapFewShotWithRandomSearch".')
    knobs: dict[str, Any] = Field(default_factory=dict)
    compile_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the optimizer's compile (MIPROv2: num_trials, minibatch_size).",
    )
    candidate_id: str = Field(description="The student program, published to the candidates topic.")
    trainset: ExampleSet
    valset: ExampleSet | None = None
    metric: MetricSpec
    lm: LMSpec | None = None
    failure_score: float = 0.0
    max_errors: int | None = Field(default=None, ge=0)
    max_lm_calls: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    seed: int = 0
    evaluation_mode: Literal["online", "batch"] = Field(
        default="online", description='"batch": full evaluations through the provider\'s Batch API.'
    )
    created_at: Timestamp = Field(default_factory=utc_now)


class Cancel(Message):
    """Stop a job: workers skip its remaining tasks and its status becomes ``cancelled``.

    ``stop_reason="tasks_missing"`` is the submitter saying it could not publish every task of
    the job: the job can never complete, so it ends ``failed`` with that stop reason instead.
    """

    kind: Literal["cancel"] = "cancel"
    job_id: str
    reason: str = ""
    stop_reason: Literal["cancelled", "tasks_missing"] | None = Field(
        default=None, description='Why the job is stopped (absent: "cancelled", a user\'s request).'
    )
    requested_at: Timestamp = Field(default_factory=utc_now)

    SCHEMA_VERSION: ClassVar[str] = "1.1"  # 1.1: stop_reason

    _stop_reason_tolerant = field_validator("stop_reason", mode="wrap")(known_or_none)


class PurgeJob(Message):
    """The job's records are being deleted (``dspex purge``): readers forget it from here on.

    Sent before the purge's tombstones. The aggregator drops the job's state, tombstones its status
    itself (after any status it sent earlier) and ignores the job's late records for
    ``LATE_USAGE_WINDOW_S``; workers treat the job as stopped.
    """

    kind: Literal["purge"] = "purge"
    job_id: str
    requested_at: Timestamp = Field(default_factory=utc_now)


JobMessage = Annotated[EvalJob | OptimizeJob | Cancel | PurgeJob, Field(discriminator="kind")]
"""Any value of the jobs topic, told apart by ``kind``."""
