"""Values of the submit topic (key: job_id): one self-contained evaluation request from any producer.

A :class:`SubmitJob` carries everything an evaluation needs: the program (its saved JSON, or the
id of a candidate already on the candidates topic), the examples inline, the metric and the job's
options. The intake worker (``dspex worker intake``) checks it and expands it into what the Python
client publishes: the candidate, the :class:`~dspex.schemas.EvalJob` and one
:class:`~dspex.schemas.Task` per example, with the ids :mod:`dspex.ids` gives. See
``docs/protocol.md``.

    >>> SubmitJob(job_id="j1", program={"type": "dspex.Predict"}, examples=[{"q": "1+1?", "a": "2"}],
    ...           input_keys=["q"], metric="exact_match:a").metric
    'exact_match:a'
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from dspex.schemas.base import Message, Timestamp, utc_now
from dspex.schemas.common import LMSpec, MetricSpec, Priority

__all__ = ["DEFAULT_TASKS_TIMEOUT_S", "SUBMIT_JOB_ID_PATTERN", "SubmitJob"]

SUBMIT_JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""What a submitted job id may be: it is a Kafka key, a file name and a URL path segment."""

DEFAULT_TASKS_TIMEOUT_S = 600.0
"""Seconds an evaluation may go with nothing done after its ``created_at`` before the intake worker
fails it as ``tasks_missing``: long enough for a busy cluster to start on it, short enough that a
producer whose tasks never went out learns it."""


class SubmitJob(Message):
    """Evaluate one program over inline examples (see the module docs).

    Exactly one of ``program`` (the self-describing program JSON that ``dspex.save`` writes and
    ``dump_program`` returns) or ``candidate_id`` (a program already on the candidates topic).
    ``examples``: every field of every example, labels included; ``input_keys`` names the program
    inputs among them (the same for every example). A value too large for one message may stand as a
    blob reference (``{"__dspex_blob__": {...}}``) to chunks already on the blobs topic.
    ``metric``: a built-in name (``"exact_match:answer"``), an import path (``"pkg.mod:fn"``, loaded
    only from modules the workers allow) or a full metric spec. ``mode``: ``"online"`` (the default)
    or ``"batch"``, as the client's ``evaluate(..., mode=...)``.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.1"  # 1.1: mode

    kind: Literal["submit"] = "submit"
    job_id: str = Field(
        pattern=SUBMIT_JOB_ID_PATTERN, description="The job's id, chosen by the producer; also the key."
    )
    name: str | None = Field(default=None, description="A label for people (dspex status).")
    program: dict[str, Any] | None = Field(default=None, description="The saved-program JSON.")
    candidate_id: str | None = Field(default=None, description="A program already on the candidates topic.")
    examples: list[dict[str, Any]] = Field(min_length=1, description="The examples, every field inline.")
    input_keys: list[str] = Field(min_length=1, description="Which example fields are program inputs.")
    metric: str | MetricSpec = Field(description='A metric name, e.g. "exact_match:answer", or a spec.')
    lm: LMSpec | None = Field(default=None, description="The LM for predictors that have none of their own.")
    priority: Priority | None = Field(default=None, description="Fair-share weight; None: normal.")
    num_threads: int | None = Field(default=None, ge=1, description="Its tasks at once per predictor.")
    max_errors: int | None = Field(default=None, ge=0, description="Failed examples that stop the job.")
    max_cost_usd: float | None = Field(default=None, ge=0, description="LM spend that stops the job.")
    failure_score: float = Field(default=0.0, description="The score of an example that failed.")
    source: str | None = Field(default=None, description="Where the examples came from, for people.")
    mode: Literal["online", "batch"] = Field(
        default="online",
        description='"batch": the LM calls go through the provider\'s Batch API (cheaper, slower).',
    )
    created_at: Timestamp = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _one_program(self) -> SubmitJob:
        if (self.program is None) == (self.candidate_id is None):
            raise ValueError("a submit message needs exactly one of program or candidate_id")
        return self
