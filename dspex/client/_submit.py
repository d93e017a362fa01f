"""What a submission puts on the topics, built and checked before anything is produced.

Every check that can fail (metric, examples, programs, LM settings, allow-lists) runs here, so a
bad submission is refused with nothing written to Kafka.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from dspex.adapters.types.base_type import has_custom_type_marker
from dspex.adapters.types.image import check_images
from dspex.client.results import output_types
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, MetricError, SecurityPolicyError
from dspex.lm import LM, BaseLM
from dspex.metrics import FieldMetric, metric_from_spec, metric_name, resolve_metric
from dspex.primitives import Example, Module
from dspex.primitives.saving import load_program
from dspex.schemas import (
    PRIORITIES,
    DatasetSummary,
    EvalJob,
    LMSpec,
    MetricSpec,
    Priority,
    ProgramSpec,
    Task,
    program_candidate_id,
)
from dspex.schemas.tasks import TaskIds
from dspex.serialization import dump_program
from dspex.streams.blobs import BlobPlan, BlobRef, BlobSettings, plan_blobs

__all__ = [
    "Limits",
    "Policy",
    "Submission",
    "build_submission",
    "check_priority",
    "in_flight_budget",
    "lm_mode",
    "lm_spec",
    "metric_spec",
    "new_job_id",
]


@dataclass(frozen=True)
class Policy:
    """What the client refuses at submit time (None: no restriction), as workers will again."""

    allow_modules: Collection[str] | None = None
    allow_api_bases: Collection[str] | None = None
    allow_key_envs: Collection[str] | None = None


@dataclass(frozen=True)
class Submission:
    """One evaluation job: its programs, the job itself, and the examples its tasks run on."""

    job: EvalJob
    specs: list[ProgramSpec]
    examples: list[Example]
    rows: list[dict[str, Any]]
    input_keys: list[list[str]]
    metric: str
    program_ids: list[str] = field(default_factory=list)  # one per program given, duplicates kept
    blobs: BlobPlan = field(default_factory=BlobPlan)  # values that travel through the blobs topic
    # candidate id -> declared output types (results.output_types), to give results back typed
    field_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    lm_mode: Literal["batch"] | None = None  # "batch": LM calls through the provider's Batch API

    def tasks(self, refs: Mapping[str, BlobRef] | None = None) -> Iterator[Task]:
        """Every task, candidate by candidate, in example order; large values as their ``refs``."""
        refs = refs or {}
        for candidate_id in self.job.candidate_ids:
            # A job's tasks differ only in their example: the first is validated as any Task is,
            # the others are copies of it with their own example (built here, valid by construction),
            # the hot path of a large submit. Each id is task_id_for's, from a hash of the shared prefix.
            template: Task | None = None
            ids = TaskIds(self.job.job_id, candidate_id)
            for index, row in enumerate(self.rows):
                example = self.blobs.apply(index, row, refs)
                if template is None:
                    template = self._first_task(candidate_id, index, example)
                    yield template
                    continue
                update = {
                    "task_id": ids.of(index),
                    "example_index": index,
                    "example": example,
                    "input_keys": self.input_keys[index],
                }
                yield template.model_copy(update=update)

    def _first_task(self, candidate_id: str, index: int, example: dict[str, Any]) -> Task:
        return Task.build(
            job_id=self.job.job_id,
            candidate_id=candidate_id,
            example_index=index,
            example=example,
            input_keys=self.input_keys[index],
            lm=self.job.lm,
            priority=self.job.priority,
            max_in_flight=self.job.max_in_flight,
            lm_mode=self.lm_mode,
        )


def new_job_id() -> str:
    """A fresh job id (time-ordered uuid text, safe in topic keys and file names)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Limits:
    """What a job is called and where it stops: ``max_errors`` failed examples, ``max_cost_usd``.

    ``priority``: its share of the predictors against other jobs (None: ``normal``).
    ``num_threads``: how many of its tasks may run at once per predictor (None: no cap of its own),
    clamped to ``in_flight_allowance`` (the live predictors' ``--concurrency``; None: unknown).
    """

    name: str | None = None
    failure_score: float = 0.0
    max_errors: int | None = None
    max_cost_usd: float | None = None
    source: str | None = None
    parent_job_id: str | None = None  # the optimization that asked for the job
    priority: str | None = None
    num_threads: int | None = None
    in_flight_allowance: int | None = None
    lm_mode: Literal["batch"] | None = None  # see Submission.lm_mode


def build_submission(
    programs: Sequence[Module | Mapping[str, Any]],
    devset: Sequence[Example],
    metric: Any,
    *,
    policy: Policy,
    limits: Limits,
    job_id: str | None = None,
    blob_settings: BlobSettings | None = None,
) -> Submission:
    """Check everything and build the messages; raises before anything reaches Kafka.

    ``metric``: anything :func:`metric_spec` takes, or a MetricSpec used as it is. Input values
    over ``blob_settings.threshold_bytes`` go through the blobs topic; one too large, or an image
    that cannot be read, is an InputError naming the field and the example.
    """
    if not programs:
        raise ConfigurationError("no programs to evaluate: pass at least one")
    spec = metric if isinstance(metric, MetricSpec) else metric_spec(metric, policy.allow_modules)
    examples, rows, input_keys = _examples(devset)
    blobs = plan_blobs(rows, input_keys, blob_settings or BlobSettings())
    dumped = [_dump(program, policy) for program in programs]
    program_ids = [program_candidate_id(data) for data in dumped]
    lm = lm_spec(current_settings().lm)
    _check_lm(lm, policy, "the context LM")
    job_id = job_id or new_job_id()
    unique = dict(zip(program_ids, dumped, strict=True))  # the same program twice runs once
    specs = [ProgramSpec(candidate_id=cid, program=data, job_id=job_id) for cid, data in unique.items()]
    job = _job(job_id, list(unique), spec, lm, len(rows), input_keys, limits)
    typed = zip(program_ids, programs, strict=True)
    types = {cid: output_types(program) for cid, program in typed if isinstance(program, Module)}
    submission = Submission(
        job, specs, examples, rows, input_keys, spec.name, program_ids, blobs=blobs, field_types=types
    )
    return dataclasses.replace(submission, lm_mode=limits.lm_mode) if limits.lm_mode else submission


def _job(
    job_id: str,
    candidate_ids: list[str],
    metric: MetricSpec,
    lm: LMSpec | None,
    num_examples: int,
    input_keys: list[list[str]],
    limits: Limits,
) -> EvalJob:
    keys = sorted({key for keys in input_keys for key in keys})
    priority = check_priority(limits.priority)
    max_in_flight, asked = in_flight_budget(limits.num_threads, limits.in_flight_allowance)
    if not math.isfinite(limits.failure_score):
        raise ConfigurationError(f"failure_score must be a finite number, got {limits.failure_score!r}")
    try:
        return EvalJob(
            job_id=job_id,
            name=limits.name,
            candidate_ids=candidate_ids,
            metric=metric,
            lm=lm,
            num_examples=num_examples,
            failure_score=float(limits.failure_score),
            max_errors=limits.max_errors,
            max_cost_usd=limits.max_cost_usd,
            dataset=DatasetSummary(name=limits.name, source=limits.source, input_keys=keys),
            parent_job_id=limits.parent_job_id,
            priority=priority,
            max_in_flight=max_in_flight,
            max_in_flight_asked=asked,
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid evaluation job: {exc}") from exc


def in_flight_budget(num_threads: int | None, allowance: int | None) -> tuple[int | None, int | None]:
    """The job's ``max_in_flight`` and, when the allowance clamped it, what was asked.

    ConfigurationError unless ``num_threads`` is a positive whole number (or None).
    """
    if num_threads is None:
        return None, None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigurationError(f"num_threads must be a whole number >= 1, got {num_threads!r}")
    if allowance is not None and num_threads > allowance:
        return allowance, num_threads
    return num_threads, None


def lm_mode(mode: str | None) -> Literal["batch"] | None:
    """A job's LM mode as tasks carry it: ``"batch"`` or None (online); ConfigurationError otherwise."""
    if mode in (None, "online"):
        return None
    if mode == "batch":
        return "batch"
    raise ConfigurationError(f"mode must be 'online' or 'batch', got {mode!r}")


def check_priority(priority: str | None) -> Priority | None:
    """``priority`` if it names one (None stays None: normal); ConfigurationError naming the valid ones."""
    if priority is None:
        return None
    for known in PRIORITIES:
        if priority == known:
            return known
    raise ConfigurationError(f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}")


# --------------------------------------------------------------------------- metric


def metric_spec(metric: Any, allow_modules: Collection[str] | None = None) -> MetricSpec:
    """The wire form of a metric object, name, spec dict or importable function.

    Unknown names and import paths that do not resolve raise MetricError; a path outside
    ``allow_modules`` raises SecurityPolicyError.
    """
    if isinstance(metric, FieldMetric | Mapping):
        return _builtin_spec(metric_from_spec(metric.spec() if isinstance(metric, FieldMetric) else metric))
    if isinstance(metric, str):
        resolved = resolve_metric(metric, allow_modules=allow_modules)
        if isinstance(resolved, FieldMetric):
            return _builtin_spec(resolved)
        return MetricSpec(name=metric, kind="import")
    if callable(metric):
        return MetricSpec(name=_import_path(metric, allow_modules), kind="import")
    raise MetricError(f"a metric must be a metric object, a name or an import path, got {metric!r}")


def _builtin_spec(metric: FieldMetric) -> MetricSpec:
    options = {key: value for key, value in metric.spec().items() if key != "metric"}
    return MetricSpec(name=metric.name, kind="builtin", options=options)


def _import_path(function: Any, allow_modules: Collection[str] | None) -> str:
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    path = f"{module}:{qualname}"
    if not module or module == "__main__" or "<" in qualname:
        raise MetricError(
            f"metric {metric_name(function)!r} cannot travel to the workers: define it at module level "
            "in a module they can import, or pass its import path ('pkg.module:function')"
        )
    if resolve_metric(path, allow_modules=allow_modules) is not function:
        raise MetricError(f"metric import path {path!r} does not lead back to the function given")
    return path


# --------------------------------------------------------------------------- examples and programs


def _examples(devset: Sequence[Example]) -> tuple[list[Example], list[dict[str, Any]], list[list[str]]]:
    examples = list(devset)
    if not examples:
        raise ConfigurationError("devset is empty: an evaluation needs at least one example")
    rows, keys = [], []
    for index, example in enumerate(examples):
        if not isinstance(example, Example):
            raise ConfigurationError(
                f"devset item {index} is a {type(example).__name__}, not a dspex.Example"
            )
        if not example.input_keys:
            raise ConfigurationError(
                f"devset example {index} has no input fields marked; call example.with_inputs('question')"
            )
        row = example.to_dict()
        if _may_hold_images(row):  # an Image becomes its marked text; lists of them lists of those
            check_images(example, f"example {index}")
        rows.append(row)
        keys.append(sorted(example.input_keys))
    return examples, rows, keys


def _may_hold_images(row: Mapping[str, Any]) -> bool:
    for value in row.values():  # a loop, not any(): this runs once per example of every job
        if type(value) is str:
            if has_custom_type_marker(value):
                return True
        elif isinstance(value, list | tuple):
            return True
    return False


def _dump(program: Module | Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    data = dict(program) if isinstance(program, Mapping) else dump_program(program)
    if policy.allow_modules is not None or isinstance(program, Mapping):
        # Build it as a worker would: refuses classes outside the allow-list and corrupt JSON now.
        load_program(data, allow_modules=policy.allow_modules)
    for where, settings in _program_lms(data, "program"):
        _check_lm(lm_spec(settings), policy, f"the LM of {where}")
    return data


def _program_lms(node: Mapping[str, Any], where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node.get("lm"), Mapping):
        yield where, node["lm"]
    for name, child in (node.get("children") or {}).items():
        if isinstance(child, Mapping):
            yield from _program_lms(child, f"{where}.{name}")


# --------------------------------------------------------------------------- LM settings


def lm_spec(lm: BaseLM | Mapping[str, Any] | None) -> LMSpec | None:
    """The LM's settings as they travel (never a key); None for no LM."""
    if lm is None:
        return None
    if isinstance(lm, BaseLM) and not isinstance(lm, LM):
        raise ConfigurationError(
            f"{lm!r} cannot travel to the workers: they call LMs over HTTP, so a job needs a dspex.LM "
            "(an OpenAI-compatible endpoint); a DummyLM or another in-process BaseLM runs only locally"
        )
    settings = lm.settings().model_dump() if isinstance(lm, LM) else dict(lm)
    if settings.get("model_type", "chat") != "chat":  # LMSpec (the wire schema) has chat calls only
        raise ConfigurationError(
            f"{lm!r} uses model_type={settings['model_type']!r}: a job's LM must be a chat one (the "
            "workers call chat completions); run Responses API LMs locally"
        )
    extra = settings.pop("request_kwargs", None) or {}
    try:
        return LMSpec(**{key: settings[key] for key in LMSpec.model_fields if key in settings}, extra=extra)
    except ValidationError as exc:
        raise ConfigurationError(f"the LM settings cannot travel to the workers: {exc}") from exc


def _check_lm(spec: LMSpec | None, policy: Policy, where: str) -> None:
    if spec is None:
        return
    if policy.allow_api_bases is not None and spec.api_base not in policy.allow_api_bases:
        raise SecurityPolicyError(
            f"{where} points at {spec.api_base}, which is not an allowed API base "
            f"({', '.join(sorted(policy.allow_api_bases)) or 'none'})"
        )
    if (
        policy.allow_key_envs is not None
        and spec.api_key_env
        and spec.api_key_env not in policy.allow_key_envs
    ):
        raise SecurityPolicyError(
            f"{where} reads its key from ${spec.api_key_env}, which is not an allowed key variable "
            f"({', '.join(sorted(policy.allow_key_envs)) or 'none'})"
        )
