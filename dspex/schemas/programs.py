"""Values of the candidates topic (key: candidate_id, compacted): the programs jobs run."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dspex.ids import content_id
from dspex.schemas.base import Message, Timestamp, utc_now

__all__ = ["ProgramSpec", "program_candidate_id"]


def program_candidate_id(program: dict[str, Any]) -> str:
    """The candidate id of a program given as its self-describing JSON (``dump_program``'s dict).

    The id covers the whole program dict; fields left out: none. It therefore equals
    ``dspex.candidate_id(program)`` (the programming model's function, over the same dict), so
    a program has one id wherever it is computed. Who published it and when (ProgramSpec's other
    fields) are not part of it.
    """
    return content_id(program)


class ProgramSpec(Message):
    """A candidate program, addressable by its content id."""

    candidate_id: str = Field(description="program_candidate_id(program).")
    program: dict[str, Any] = Field(description="The self-describing program JSON.")
    job_id: str | None = Field(default=None, description="The job that published it, when one did.")
    label: str | None = Field(default=None, description='A note for people, e.g. "best after step 3".')
    created_at: Timestamp = Field(default_factory=utc_now)

    @classmethod
    def build(cls, program: dict[str, Any], **fields: Any) -> ProgramSpec:
        """A spec for ``program`` with its candidate id computed."""
        return cls(candidate_id=program_candidate_id(program), program=program, **fields)

    @property
    def id_matches(self) -> bool:
        """Whether ``candidate_id`` is the content id of ``program`` (a reader may check it)."""
        return self.candidate_id == program_candidate_id(self.program)
