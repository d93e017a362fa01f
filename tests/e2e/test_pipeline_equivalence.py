"""Distributed equals local: the pipeline gives exactly what local Evaluate gives.

2,000 examples x 2 candidates (Predict and ChainOfThought) through three predictor processes, a
scorer and the aggregator, against the deterministic simulated LM with every cache off; then the
same with local ``Evaluate``. Per candidate: the same score; per example: the same score, the same
outputs, no error; and each run costs the LM exactly one request per example and candidate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import (
    Pipeline,
    cot_program,
    devset,
    local_evaluate,
    per_example,
    predict_program,
    read_topic,
    sim_lm,
)

from dspex.schemas import HEADER_JOB_ID
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 2000


def test_distributed_evaluation_equals_local_evaluate(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.01, jitter=0.01)  # 0-20 ms: answers do not depend on it
    lm = sim_lm(sim, cache_dir)
    programs = [predict_program(), cot_program()]
    examples = devset(EXAMPLES)
    assert len(shared_pipeline.stack.alive("predict")) == 3

    job_id = shared_pipeline.submit(programs, examples, lm, name="distributed-equals-local")
    status = shared_pipeline.finish(job_id)
    assert (status.state, status.done, status.total_tasks, status.errors) == ("completed", 4000, 4000, 0)
    distributed = shared_pipeline.client.collect(job_id)
    after_pipeline = sim.control.stats()
    assert after_pipeline["completions_ok"] == after_pipeline["requests_total"] == 2 * EXAMPLES

    local = [local_evaluate(program, examples, lm) for program in programs]
    after_local = sim.control.stats()
    assert after_local["completions_ok"] == after_local["requests_total"] == 4 * EXAMPLES

    for remote, here in zip(distributed, local, strict=True):
        assert (remote.errors, here.errors) == (0, 0), (remote.error_messages, here.error_messages)
        assert (remote.processed, remote.total, remote.stopped_early) == (EXAMPLES, EXAMPLES, False)
        assert per_example(remote) == per_example(here)
        assert remote.score == here.score
        assert 0 < remote.score < 100  # a score that can tell a wrong example from a right one
        assert (remote.usage.lm_calls, remote.usage.cache_hits) == (EXAMPLES, 0)
        assert remote.usage.total_tokens == here.usage.total_tokens
    assert distributed[0].score != distributed[1].score  # the two candidates really differ
    assert list(distributed[1].records[0].prediction or {}) == ["reasoning", "answer"]
    assert sim.control.stats()["by_status"] == {"200": 4 * EXAMPLES}
    # and the work really was spread over the three predictor processes, each scoring its own
    # predictions (a built-in metric: nothing of the job on the predictions topic)
    scores = [
        json.loads(message.value())
        for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("scores"))
        if dict(message.headers() or []).get(HEADER_JOB_ID) == job_id.encode()
    ]
    assert {(score["source"], score["worker_id"] == score["predicted_by"]) for score in scores} == {
        ("predictor", True)
    }
    predictors = Counter(score["predicted_by"] for score in scores)
    assert sum(predictors.values()) >= 2 * EXAMPLES
    assert sorted(predictors) == ["predict-1", "predict-2", "predict-3"], predictors
    assert not [
        message
        for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("predictions"))
        if dict(message.headers() or []).get(HEADER_JOB_ID) == job_id.encode()
    ]
