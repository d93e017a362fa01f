"""`dspex status JOB` of a batch-mode evaluation shows what `dspex batches --job JOB` shows: its LM
requests queued and at the provider, its batches in flight and the saving against online."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dspex.cli._ids import ResolvedJob
from dspex.cli._status_view import describe_job, job_batches
from dspex.cli.batches import JobBatches, describe, summarize, with_cost
from dspex.schemas import JobStatus, OptimizeStatus, Task, UsageRecord
from dspex.schemas.provider_batch import BatchState, ParkedLMRequest, ProviderBatchCheckpoint

NOW = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
MODEL = "openai/status-view-unpriced-model"  # no price registered: the default half-price share


def _parked(job_id: str, index: int) -> ParkedLMRequest:
    task = Task.build(
        job_id=job_id, candidate_id="c", example_index=index, example={"q": "1"}, input_keys=["q"]
    )
    return ParkedLMRequest(
        request_hash=f"h{index}", job_id=job_id, task_id=task.task_id, round=0,
        api_base="http://x/v1", model=MODEL, body={}, task=task,
    )  # fmt: skip


def _checkpoint(key: str, state: BatchState, *indexes: int) -> ProviderBatchCheckpoint:
    requests = [_parked("job-1", index) for index in indexes]
    return ProviderBatchCheckpoint(
        key=key, api_base="http://x/v1", model=MODEL, state=state, requests=requests
    )


def _status(state: Any = "running") -> JobStatus:
    finished = NOW if state == "completed" else None
    return JobStatus(
        job_id="job-1", state=state, total_tasks=10, done=4, started_at=NOW, updated_at=NOW,
        finished_at=finished, usage=UsageRecord(lm_calls=8, cost_usd=0.25),
    )  # fmt: skip


def _batches() -> JobBatches:
    found = summarize([_checkpoint("k1", "submitted", 0, 1, 2), _checkpoint("k2", "pending", 3, 4)])
    return with_cost(found["job-1"], _status())


def test_a_batch_mode_jobs_status_shows_its_requests_batches_and_saving() -> None:
    batches = _batches()
    text = describe_job(ResolvedJob("job-1", _status()), NOW, batches)
    line = f"  provider batches ({MODEL}): 2 queued, 3 at the provider in 1 batches"
    assert line + "; cost so far $0.2500, saving $0.2500 against online" in text.splitlines()
    assert describe(batches) in text  # the words `dspex batches --job job-1` prints after the job
    assert text.index("progress:") < text.index("provider batches")


def test_a_job_without_requests_in_provider_batches_shows_no_such_line() -> None:
    assert "provider batches" not in describe_job(ResolvedJob("job-1", _status()), NOW)


class Untouchable:
    """A client that fails the test if anything reads the cluster through it."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the cluster was read ({name}) for a job that cannot have batches in flight")


@pytest.mark.parametrize(
    "status",
    [
        None,  # submitted, no status yet
        _status("completed"),
        OptimizeStatus(job_id="job-1", state="running", optimizer="gepa", started_at=NOW, updated_at=NOW),
    ],
)
def test_only_a_running_evaluation_reads_the_batch_checkpoints(status: Any) -> None:
    assert job_batches(Untouchable(), ResolvedJob("job-1", status)) is None  # type: ignore[arg-type]
