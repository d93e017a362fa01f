"""`dspex batches`: what the provider-batch checkpoints say per job, and the saving against online."""

from __future__ import annotations

import pytest

from dspex.cli.batches import saving, summarize
from dspex.lm.pricing import DEFAULT_PRICES, ModelPrice
from dspex.schemas import Task
from dspex.schemas.provider_batch import BatchState, ParkedLMRequest, ProviderBatchCheckpoint


def _parked(job_id: str, index: int) -> ParkedLMRequest:
    task = Task.build(
        job_id=job_id, candidate_id="c", example_index=index, example={"q": "1"}, input_keys=["q"]
    )
    return ParkedLMRequest(
        request_hash=f"h{index}", job_id=job_id, task_id=task.task_id, round=0,
        api_base="http://x/v1", model="openai/m", body={}, task=task,
    )  # fmt: skip


def _checkpoint(key: str, state: BatchState, *requests: ParkedLMRequest) -> ProviderBatchCheckpoint:
    return ProviderBatchCheckpoint(
        key=key, api_base="http://x/v1", model="openai/m", state=state, requests=list(requests)
    )


def test_requests_are_counted_per_job_and_state() -> None:
    jobs = summarize(
        [
            _checkpoint("k1", "submitted", _parked("a", 0), _parked("a", 1), _parked("b", 2)),
            _checkpoint("k2", "pending", _parked("a", 3)),
            _checkpoint("k3", "submitted", _parked("a", 4)),
            _checkpoint("k4", "done"),
        ]
    )
    assert sorted(jobs) == ["a", "b"]
    assert (jobs["a"].queued, jobs["a"].at_provider, jobs["a"].as_dict()["batches"]) == (1, 3, 2)
    assert (jobs["b"].queued, jobs["b"].at_provider, jobs["b"].batches) == (0, 1, {"k1"})


def test_the_saving_follows_the_models_batch_share() -> None:
    assert saving("openai/not-priced-anywhere", 1.0) == pytest.approx(1.0)  # half price: saved as much
    DEFAULT_PRICES.register({"openai/quarter-share-test-model": ModelPrice(1.0, 1.0, 0.25)})
    assert saving("openai/quarter-share-test-model", 1.0) == pytest.approx(3.0)
