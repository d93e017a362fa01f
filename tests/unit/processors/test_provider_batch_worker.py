"""The provider-batch worker's bookkeeping: batch keys, shared requests, options from the CLI's."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import ConfigurationError
from dspex.lm.batch_mode import ParkedCall
from dspex.lm.provider_batch import BatchResult
from dspex.processors.common import WorkerOptions
from dspex.processors.provider_batch import (
    ProviderBatchOptions,
    ProviderBatchWorker,
    _checkpoint_key,
    _unique_requests,
    parked_request,
)
from dspex.schemas import Task, decode, encode
from dspex.schemas.provider_batch import ParkedLMRequest, ProviderBatchCheckpoint, StoredAnswer
from dspex.streams.config import KafkaSettings


def _task(index: int, answers: dict[str, Any] | None = None) -> Task:
    return Task.build(
        job_id="job-1",
        candidate_id="cand-1",
        example_index=index,
        example={"question": f"q{index}", "answer": "1"},
        input_keys=["question"],
        lm_mode="batch",
        batch_answers=answers,
    )


def _parked(index: int, digest: str, answers: dict[str, Any] | None = None) -> ParkedLMRequest:
    call = ParkedCall(
        digest, "http://127.0.0.1:8000/v1", "openai/sim", None, {"model": "sim", "messages": []}
    )
    return parked_request(_task(index, answers), call)


def test_a_parked_request_names_its_round_and_travels_with_its_task() -> None:
    first = _parked(0, "h0")
    later = _parked(0, "h1", answers={"h0": {"status": 200, "body": {"choices": []}}})
    assert (first.round, later.round) == (0, 1) and first.task_id == later.task_id
    decoded = decode(encode(later), ParkedLMRequest)
    assert decoded.task.batch_answers == later.task.batch_answers and decoded.task.lm_mode == "batch"


def test_tasks_asking_the_same_share_one_batch_request() -> None:
    parked = [_parked(0, "same"), _parked(1, "same"), _parked(2, "other")]
    assert [request.custom_id for request in _unique_requests(parked)] == ["same", "other"]


def test_a_batch_key_is_stable_and_a_retry_gets_a_new_one() -> None:
    parked = [_parked(0, "h0"), _parked(1, "h1")]
    requests = _unique_requests(parked)
    key = _checkpoint_key(requests, parked)
    assert _checkpoint_key(list(reversed(requests)), list(reversed(parked))) == key
    retried = [p.model_copy(update={"tries": 1}) for p in parked]
    assert _checkpoint_key(requests, retried) != key
    checkpoint = ProviderBatchCheckpoint(
        key=key, api_base="http://x/v1", model="openai/sim", state="pending", requests=parked
    )
    assert decode(encode(checkpoint), ProviderBatchCheckpoint) == checkpoint


def test_options_come_from_the_worker_options() -> None:
    options = WorkerOptions(batch_window=0.5, batch_poll=2.0, batch_max_requests=7, batch_max_bytes=1000)
    batching = ProviderBatchOptions.of(options)
    assert (batching.window_s, batching.poll_s, batching.max_tries) == (0.5, 2.0, 3)
    assert (batching.limits.max_requests, batching.limits.max_bytes, batching.retry) == (7, 1000, "batch")
    assert ProviderBatchOptions.of(WorkerOptions(batch_retry="online")).retry == "online"
    with pytest.raises(ConfigurationError):
        ProviderBatchOptions(poll_s=0)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> ProviderBatchWorker:
    """A worker that records what it would save, send and resume (nothing connects)."""
    made = ProviderBatchWorker(KafkaSettings(bootstrap_servers="127.0.0.1:1"), WorkerOptions(metrics=False))
    made.saved, made.sent_back = [], []  # type: ignore[attr-defined]

    async def save(checkpoint: ProviderBatchCheckpoint) -> None:
        made.saved.append(checkpoint)  # type: ignore[attr-defined]

    async def resume(parked: ParkedLMRequest, answer: StoredAnswer) -> None:
        made.sent_back.append((parked.task_id, answer))  # type: ignore[attr-defined]

    async def send(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(made, "_save", save)
    monkeypatch.setattr(made, "_resume", resume)
    monkeypatch.setattr("dspex.processors.provider_batch._send", send)
    return made


GROUP = ("http://127.0.0.1:8000/v1", None, "sim")
OK = {"choices": [{"message": {"content": "5"}}]}


async def test_a_request_already_in_flight_joins_its_batch_and_both_tasks_get_the_answer(
    worker: ProviderBatchWorker,
) -> None:
    await worker._record(GROUP, [_parked(0, "h0")])
    await worker._record(GROUP, [_parked(1, "h0")])  # another task, the same request
    [checkpoint] = worker._inflight.values()
    assert [p.task_id for p in checkpoint.requests] == [_task(0).task_id, _task(1).task_id]
    assert len(_unique_requests(checkpoint.requests)) == 1  # asked once
    batch = {"id": "b1", "status": "completed"}
    await worker._finish(checkpoint, batch, {"h0": BatchResult("h0", 200, OK)})
    answers = [answer for _, answer in worker.sent_back]  # type: ignore[attr-defined]
    assert [a.cached for a in answers] == [False, True]  # billed once, a cache hit for the other
    assert not worker._inflight and not worker._known and not worker._hash_at
    assert worker.saved[-1].state == "done"  # type: ignore[attr-defined]


async def test_a_retried_request_stays_known_while_its_new_batch_is_in_flight(
    worker: ProviderBatchWorker,
) -> None:
    await worker._record(GROUP, [_parked(0, "h0"), _parked(1, "h1")])
    [checkpoint] = worker._inflight.values()
    results = {"h0": BatchResult("h0", 200, OK), "h1": BatchResult("h1", 500, None, "server error")}
    await worker._finish(checkpoint, {"id": "b1", "status": "completed"}, results)
    [retry] = worker._inflight.values()
    assert [(p.request_hash, p.tries) for p in retry.requests] == [("h1", 1)]
    assert ("h1", _task(1).task_id, 0) in worker._known  # a redelivery of it is not batched again
    assert worker._hash_at == {"h1": retry.key}
    assert [task_id for task_id, _ in worker.sent_back] == [_task(0).task_id]  # type: ignore[attr-defined]
