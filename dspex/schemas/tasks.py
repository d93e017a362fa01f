"""Values of the tasks topic (key: task_id): the unit of work, one candidate on one example."""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from dspex.ids import ID_HEX_DIGITS, content_id
from dspex.schemas.base import Message, Timestamp, known_or_none
from dspex.schemas.common import LMSpec, Priority

__all__ = ["Task", "TaskIds", "task_id_for"]


def task_id_for(job_id: str, candidate_id: str, example_index: int) -> str:
    """The task id: content id of ``{"job_id", "candidate_id", "example_index"}``.

    Left out on purpose: the example's contents (the index names it within the job), ``attempt``
    (a retry is the same task), ``lm``, ``deadline`` and ``priority`` (how to run it, not what it is).
    Redelivered or re-published tasks therefore get the same id, which makes consumers idempotent.
    """
    return content_id({"job_id": job_id, "candidate_id": candidate_id, "example_index": example_index})


class TaskIds:
    """:func:`task_id_for` of one job and candidate, by example index, for submitting many tasks.

    The canonical JSON of the three fields (sorted keys) starts with the candidate and ends with the
    job, the index between them: the start is hashed once and only the rest per task.
    """

    def __init__(self, job_id: str, candidate_id: str) -> None:
        start = f'{{"candidate_id":{json.dumps(candidate_id, ensure_ascii=False)},"example_index":'
        self._start = hashlib.sha256(start.encode("utf-8"))
        self._end = f',"job_id":{json.dumps(job_id, ensure_ascii=False)}}}'

    def of(self, example_index: int) -> str:
        digest = self._start.copy()
        digest.update(f"{example_index}{self._end}".encode())
        return digest.hexdigest()[:ID_HEX_DIGITS]


class Task(Message):
    """Run candidate ``candidate_id`` on example ``example_index`` of job ``job_id``.

    ``priority`` is the job's (None: ``normal``); it travels in the ``dspex-priority`` header too,
    so that a predictor can queue a task fairly before decoding it. ``max_in_flight`` is the job's
    in-flight budget per predictor (None: none of its own), in the ``dspex-max-in-flight`` header too.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.3"  # 1.1: priority; 1.2: max_in_flight; 1.3: lm_mode

    task_id: str = Field(description="task_id_for(job_id, candidate_id, example_index).")
    job_id: str
    candidate_id: str
    example_index: int = Field(ge=0)
    example: dict[str, Any] = Field(description="All fields of the example, labels included.")
    input_keys: list[str] = Field(min_length=1, description="Which example fields are program inputs.")
    attempt: int = Field(default=0, ge=0)
    lm: LMSpec | None = Field(default=None, description="The job's LM, for programs without their own.")
    deadline: Timestamp | None = None
    priority: Priority | None = Field(default=None, description="The job's priority; None: normal.")
    max_in_flight: int | None = Field(default=None, ge=1, description="The job's in-flight budget.")
    lm_mode: Literal["batch"] | None = Field(
        default=None, description="'batch': LM calls go through the provider's Batch API; None: online."
    )
    batch_answers: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="Batch mode: the provider's answers so far, by request hash (dspex.lm.batch_mode).",
    )

    _priority_tolerant = field_validator("priority", mode="wrap")(known_or_none)
    _mode_tolerant = field_validator("lm_mode", mode="wrap")(known_or_none)

    @classmethod
    def build(
        cls, *, job_id: str, candidate_id: str, example_index: int, example: dict[str, Any], **fields: Any
    ) -> Task:
        """A task with its id computed."""
        task_id = task_id_for(job_id, candidate_id, example_index)
        return cls(
            task_id=task_id,
            job_id=job_id,
            candidate_id=candidate_id,
            example_index=example_index,
            example=example,
            **fields,
        )

    @property
    def inputs(self) -> dict[str, Any]:
        """The example's input fields only."""
        return {key: self.example[key] for key in self.input_keys if key in self.example}
