"""Values of the provider-batch topics (see :mod:`dspex.processors.provider_batch`).

- ``lm-requests`` (key: request hash): :class:`ParkedLMRequest`, a batch-mode task's LM request it
  is parked on, with the task itself so that the provider-batch worker can send it back answered;
- ``lm-batches`` (compacted, key: batch key): :class:`ProviderBatchCheckpoint`, one provider batch
  and the parked requests it answers, written before it is submitted and after each change;
- ``lm-responses`` (compacted, key: request hash): :class:`LMBatchAnswer`, what the provider
  answered to one request.

No value holds an API key: an endpoint's key is named by its environment variable only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dspex.schemas.base import Message, Timestamp, WireModel
from dspex.schemas.tasks import Task

__all__ = ["BatchState", "LMBatchAnswer", "ParkedLMRequest", "ProviderBatchCheckpoint", "StoredAnswer"]

BatchState = Literal["pending", "submitted", "done"]


class StoredAnswer(WireModel):
    """The provider's answer to one request: a chat completion (status 200) or its error text.

    ``status`` None: the request got no answer (its batch expired or was cancelled). ``cached``: an
    answer the provider gave once already (another task, another job) and did not bill again: the
    call counts as a cache hit, as the LM response cache's would. ``online``: answered by the online
    endpoint after its batches did not (``--batch-retry online``): priced at the online rate."""

    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False
    online: bool = False


class ParkedLMRequest(Message):
    """A batch-mode task waits for this LM request (``round``: how many answers it had already)."""

    request_hash: str
    job_id: str
    task_id: str
    round: int = Field(ge=0)
    api_base: str
    model: str = Field(description="'provider/name' as the LM knows it; the body carries the name sent.")
    api_key_env: str | None = None
    body: dict[str, Any]
    task: Task
    tries: int = Field(default=0, ge=0, description="Batches this request was in without an answer.")


class ProviderBatchCheckpoint(Message):
    """One provider batch: its key (metadata), its provider id once submitted, what it answers."""

    SCHEMA_VERSION: ClassVar[str] = "1.0"

    key: str
    api_base: str
    api_key_env: str | None = None
    model: str
    state: BatchState
    batch_id: str | None = None
    requests: list[ParkedLMRequest] = Field(default_factory=list)
    created_at: Timestamp | None = None


class LMBatchAnswer(Message):
    """What the provider answered to the request ``request_hash`` (in which batch)."""

    request_hash: str
    batch_id: str
    answer: StoredAnswer
