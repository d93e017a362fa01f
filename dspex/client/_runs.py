"""Program runs on the cluster: predictions with their traces, not scores (``Client.predict``).

An optimizer's teacher runs need each example's outputs and trace, which the score records on the
wire carry (the predictor writes them, the scorer passes them on). A run is therefore an evaluation
job whose metric passes every run that produced outputs (:func:`ran`, in ``dspex`` so every worker
may import it); its score records are turned back into :class:`~dspex.Prediction` objects whose
``trace`` names the caller's own predictors.

One program per example is allowed (a teacher without that example among its demos): the examples
are grouped by program and each group is one job, since a job is every candidate on every example.
All the jobs are published at once and followed together.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from dspex import errors
from dspex.client.results import coerce_outputs, output_types, usage_of
from dspex.errors import ConfigurationError, DspexError, LMError
from dspex.primitives import Example, Module, Prediction, TraceStep
from dspex.schemas import ErrorInfo, MetricSpec, ScoreRecord
from dspex.streams.blobs import BLOB_REF_KEY

__all__ = [
    "RUN_METRIC",
    "ProgramGroup",
    "examples_at",
    "group_by_program",
    "prediction_of",
    "ran",
    "remote_exception",
]


def ran(example: Any, prediction: Any, trace: Any = None) -> float:
    """The metric of a run job: every run that produced outputs passes (failed runs never reach a
    metric: they carry their error instead)."""
    return 1.0


RUN_METRIC = MetricSpec(name=f"{__name__}:ran", kind="import")
"""How a run job names :func:`ran` (``dspex`` modules are always allowed on workers)."""


@dataclass
class ProgramGroup:
    """One program and the positions of the examples it runs on (one job)."""

    program: Module
    positions: list[int] = field(default_factory=list)


def group_by_program(programs: Module | Sequence[Module], count: int) -> list[ProgramGroup]:
    """The examples' positions grouped by program (the same object: one group), first seen first."""
    if isinstance(programs, Module):
        return [ProgramGroup(programs, list(range(count)))] if count else []
    items = list(programs)
    if len(items) != count:
        raise ConfigurationError(f"{len(items)} programs for {count} examples: give one, or one per example")
    groups: dict[int, ProgramGroup] = {}
    for position, program in enumerate(items):
        if not isinstance(program, Module):
            raise ConfigurationError(f"program {position} is a {type(program).__name__}, not a dspex Module")
        groups.setdefault(id(program), ProgramGroup(program)).positions.append(position)
    return list(groups.values())


def prediction_of(
    record: ScoreRecord | None, program: Module, example: Example | None = None
) -> Prediction | Exception:
    """A run's outcome from its score record: the prediction (pydantic-typed outputs rebuilt from
    ``program``'s signatures), its usage and its trace (steps naming ``program``'s predictors by
    path), or the exception the run raised.

    A predictor's trace names a value that went through the blobs topic by its reference; given the
    ``example`` the run was on, the reference becomes that example's value again, so that demos
    bootstrapped from the trace hold the image, as they do after a local run."""
    if record is None:
        return DspexError("the cluster returned no result for this example")
    if record.outputs is None:
        return remote_exception(record.error)
    prediction = Prediction(coerce_outputs(record.outputs, output_types(program)))
    prediction._usage = usage_of(record.usage)
    predictors = dict(program.named_predictors())
    sent = _sent_values(example) if example is not None and _names_blobs(record) else {}
    prediction._trace = [
        TraceStep(
            entry.predictor, predictors[entry.predictor], _restored(entry.inputs, sent), dict(entry.outputs)
        )
        for entry in record.trace
        if entry.predictor in predictors  # steps of modules outside the program tree have no path
    ]
    return prediction


def _names_blobs(record: ScoreRecord) -> bool:
    return any(isinstance(v, dict) and BLOB_REF_KEY in v for e in record.trace for v in e.inputs.values())


def _sent_values(example: Example) -> dict[str, Any]:
    """The example's values by the hash they travelled under (sha256 of their JSON in the task)."""
    row = example.to_dict()
    found: dict[str, Any] = {}
    for key, value in example.items():
        try:
            found[hashlib.sha256(to_json(row[key])).hexdigest()] = value
        except (PydanticSerializationError, KeyError):
            continue
    return found


def _restored(inputs: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    if not sent:
        return dict(inputs)
    restored = {}
    for key, value in inputs.items():
        ref = value.get(BLOB_REF_KEY) if isinstance(value, dict) and len(value) == 1 else None
        sha = ref.get("sha256") if isinstance(ref, dict) else None
        restored[key] = sent.get(sha, value) if isinstance(sha, str) else value
    return restored


def remote_exception(info: ErrorInfo | None) -> Exception:
    """The exception a remote run raised, rebuilt as far as its wire form allows: dspex's own and
    Python's built-in exception classes by name, any other as a DspexError naming its type."""
    if info is None:
        return DspexError("the run failed without an error message")
    cls = getattr(errors, info.type, None) or getattr(builtins, info.type, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return _build(cls, info)
        except Exception:  # a constructor that needs more than a message (e.g. AdapterParseError)
            pass
    return DspexError(f"{info.type}: {info.message}")


def _build(cls: type[Exception], info: ErrorInfo) -> Exception:
    if issubclass(cls, LMError):
        return cls(info.message, status=info.status)
    if cls is errors.AdapterParseError:
        return errors.AdapterParseError(info.message, raw_text="")
    return cls(info.message)


def examples_at(examples: Sequence[Example], positions: Sequence[int]) -> list[Example]:
    """The examples at ``positions``, in that order."""
    return [examples[position] for position in positions]
