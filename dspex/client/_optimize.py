"""Cluster optimizations from the client side: submit an OptimizeJob, follow it, fetch the best program.

    with dspex.context(lm=lm):
        best = client.optimize(program, trainset, valset, "numeric_equal:answer",
                               optimizer="bootstrap-rs", knobs={"num_candidate_programs": 4})

The optimizer name and knobs, the metric, the examples and the program are checked here, before
anything is produced; the examples' large values go to the blobs topic (as an evaluation's do), the
student to the candidates topic, then the job to the jobs topic, each acknowledged.
``dspex worker optimize`` runs it; its terminal OptimizeStatus names the best program, which is
read back from the candidates topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from dspex.client._cluster import Follow, follow_status
from dspex.client._submit import (
    Policy,
    _check_lm,
    _dump,
    _examples,
    lm_mode,
    lm_spec,
    metric_spec,
    new_job_id,
)
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, InputError, JobError
from dspex.optimizers.registry import check_compile_options, cluster_optimizer
from dspex.primitives import Example, Module
from dspex.primitives.saving import load_program
from dspex.schemas import ExampleSet, OptimizeJob, OptimizeStatus, ProgramSpec
from dspex.streams.blobs import BlobPlan, BlobRef, BlobSettings, BlobWriter, plan_blobs
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.reader import CompactedReader
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry

__all__ = [
    "OptimizeRequest",
    "build_optimize_job",
    "fetch_program",
    "submit_optimize",
    "wait_optimize",
]

logger = logging.getLogger(__name__)

_PROGRAM_WAIT_S = 30.0


@dataclass(frozen=True)
class OptimizeRequest:
    """What to optimize and how (the arguments of ``Client.optimize``)."""

    program: Module | Mapping[str, Any]
    trainset: Sequence[Example]
    valset: Sequence[Example] | None
    metric: Any
    optimizer: str = "bootstrap-rs"
    knobs: Mapping[str, Any] = field(default_factory=dict)
    compile_options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    seed: int = 0
    max_lm_calls: int | None = None
    max_cost_usd: float | None = None
    max_errors: int | None = None
    mode: str = "online"  # "batch": the full evaluations through the provider's Batch API


def build_optimize_job(
    request: OptimizeRequest, policy: Policy, blob_settings: BlobSettings | None = None
) -> tuple[ProgramSpec, OptimizeJob]:
    """The student's ProgramSpec and the job, every check done (nothing produced yet).

    The examples are still inline here; a value too large even for the blobs topic, or a label over
    ``blob_settings.threshold_bytes``, is an InputError naming the set, the example and the field.
    """
    blob_settings = blob_settings or BlobSettings()
    spec = metric_spec(request.metric, policy.allow_modules)
    # Unknown optimizer names and knobs fail here, not on a worker.
    offered = {
        "metric": request.metric,
        "seed": request.seed,
        "max_errors": request.max_errors,
        "max_lm_calls": request.max_lm_calls,
        "max_cost_usd": request.max_cost_usd,
    }
    evaluation_mode: Literal["online", "batch"] = lm_mode(request.mode) or "online"
    optimizer = cluster_optimizer(request.optimizer, request.knobs, offered)
    check_compile_options(optimizer, request.compile_options)
    program = ProgramSpec.build(_dump(request.program, policy))
    lm = lm_spec(current_settings().lm)
    _check_lm(lm, policy, "the context LM")
    try:
        job = OptimizeJob(
            job_id=new_job_id(),
            name=request.name,
            optimizer=request.optimizer,
            knobs=dict(request.knobs),
            compile_options=dict(request.compile_options),
            candidate_id=program.candidate_id,
            trainset=_example_set("trainset", request.trainset, blob_settings),
            valset=(
                _example_set("valset", request.valset, blob_settings) if request.valset is not None else None
            ),
            metric=spec,
            lm=lm,
            max_errors=request.max_errors,
            max_lm_calls=request.max_lm_calls,
            max_cost_usd=request.max_cost_usd,
            seed=request.seed,
            evaluation_mode=evaluation_mode,
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid optimize job: {exc}") from exc
    return program.model_copy(update={"job_id": job.job_id}), job


def _example_set(name: str, examples: Sequence[Example], blob_settings: BlobSettings) -> ExampleSet:
    _, rows, keys = _examples(examples)
    input_keys = sorted({key for row_keys in keys for key in row_keys})
    example_set = ExampleSet(examples=rows, input_keys=input_keys)
    _blob_plan(name, example_set, blob_settings)  # refuse what cannot be sent before anything is
    return example_set


def _blob_plan(name: str, examples: ExampleSet, settings: BlobSettings) -> BlobPlan:
    """The set's values that go through the blobs topic. The worker marks the same inputs on every
    example (the set's ``input_keys``), so a field counts as an input if any example has it as one."""
    rows = examples.examples or []
    try:
        return plan_blobs(rows, [examples.input_keys] * len(rows), settings)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc


async def submit_optimize(
    producer: AsyncProducer,
    registry: TopicRegistry,
    program: ProgramSpec,
    job: OptimizeJob,
    *,
    blobs: BlobWriter | None = None,
) -> OptimizeJob:
    """The examples' large values (blobs topic), the student, then the job, each acknowledged (a
    worker that sees the job finds the program and the values); the job as it was sent.

    As for an evaluation, an input value over the writer's ``threshold_bytes`` travels as chunks and
    the job carries its reference, so a trainset of images does not outgrow the broker's message
    limit; the optimize worker reads the values back. ``blobs`` remembers the values it wrote
    before (None: a writer with default settings, for this submission only).
    """
    job = await _with_blob_refs(producer, registry, job, blobs or BlobWriter())
    for role, model in (("candidates", program), ("jobs", job)):
        record = to_record(model, role=role)
        await producer.produce_record(registry.name(role), record)  # type: ignore[arg-type]
    return job


async def _with_blob_refs(
    producer: AsyncProducer, registry: TopicRegistry, job: OptimizeJob, writer: BlobWriter
) -> OptimizeJob:
    sets = {"trainset": job.trainset, "valset": job.valset}
    plans = {name: _blob_plan(name, found, writer.settings) for name, found in sets.items() if found}
    values = {sha: data for plan in plans.values() for sha, data in plan.values.items()}
    if not values:
        return job
    refs = await writer.write_all(producer, registry.name("blobs"), values)
    changed = {name: _referenced(sets[name], plan, refs) for name, plan in plans.items() if plan.values}
    return job.model_copy(update=changed)


def _referenced(examples: ExampleSet | None, plan: BlobPlan, refs: Mapping[str, BlobRef]) -> ExampleSet:
    assert examples is not None and examples.examples is not None  # planned sets are inline
    rows = [plan.apply(index, row, refs) for index, row in enumerate(examples.examples)]
    return examples.model_copy(update={"examples": rows})


async def wait_optimize(
    settings: KafkaSettings,
    registry: TopicRegistry,
    job_id: str,
    *,
    timeout: float | None = None,
    display_progress: bool = False,
    on_status: Callable[[Any], None] | None = None,
) -> OptimizeStatus:
    """The optimization's terminal status; JobError unless it completed. ``on_status`` sees every
    status read (MLflow's live trials)."""
    follow = Follow(
        job_id, timeout=timeout, display_progress=display_progress, label=f"optimize {job_id[:12]}",
        on_status=on_status,
    )  # fmt: skip
    status = await follow_status(settings, registry, follow)
    if not isinstance(status, OptimizeStatus):
        raise JobError(f"job {job_id} is not an optimization", job_id=job_id, state=status.state)
    if status.unreported_note is not None:  # the status's usage lacks those calls: say so
        logger.warning("optimization %s: %s", job_id, status.unreported_note)
    if status.state != "completed":
        raise JobError(
            f"optimization {job_id} {status.state}: {status.reason or 'no reason given'}",
            job_id=job_id,
            state=status.state,
            reason=status.reason,
        )
    return status


async def fetch_program(
    settings: KafkaSettings,
    registry: TopicRegistry,
    status: OptimizeStatus,
    *,
    allow_modules: Collection[str] | None = None,
) -> Module:
    """The best program of a completed optimization, read from the candidates topic and built."""
    candidate_id = status.best_candidate_id
    if candidate_id is None:
        raise JobError(f"optimization {status.job_id} names no best program", job_id=status.job_id)
    reader: CompactedReader[ProgramSpec] = CompactedReader(
        settings, registry.name("candidates"), decoder=ProgramSpec
    )
    async with reader:
        try:
            spec = await reader.wait_for(candidate_id, _PROGRAM_WAIT_S)
        except TimeoutError:
            raise JobError(
                f"program {candidate_id} is not on {reader.topic} (waited {_PROGRAM_WAIT_S:g} s)",
                job_id=status.job_id,
            ) from None
    return load_program(spec.program, allow_modules=allow_modules)
