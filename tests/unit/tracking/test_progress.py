"""Metrics over time: a point is never sent twice at a step its run already holds (an optimization
resumed by another worker repeats its checkpointed trials), and a cluster evaluation's progress
costs its event loop nothing even when the tracking server cannot be reached."""

from __future__ import annotations

import socket
import time

from dspex.schemas import JobStatus
from dspex.schemas.status import CandidateAggregate
from dspex.tracking import MlflowSettings
from dspex.tracking.content import MetricPoint
from dspex.tracking.logger import EXPORT_ERRORS, MlflowLogger, RunRef
from dspex.tracking.progress import EvaluationProgress, progress_points


def test_a_run_takes_each_metric_only_past_its_last_step() -> None:
    run = RunRef(run_id="r", last_steps={"score": 2})  # a resumed run: score logged up to step 2
    first = [MetricPoint("score", 0.5, step) for step in range(4)] + [MetricPoint("cost_usd", 1.0, 0)]
    assert run.unsent(first) == [MetricPoint("score", 0.5, 3), MetricPoint("cost_usd", 1.0, 0)]
    again = [MetricPoint("score", 0.7, step) for step in range(6)] + [MetricPoint("cost_usd", 2.0, 0)]
    assert run.unsent(again) == [MetricPoint("score", 0.7, 4), MetricPoint("score", 0.7, 5)]
    assert run.last_steps == {"score": 5, "cost_usd": 0}


def test_progress_points_are_the_running_numbers_at_the_examples_done() -> None:
    aggregate = CandidateAggregate(candidate_id="c", total=200, done=50, errors=1, score_sum=20.0)
    points = {point.key: point for point in progress_points(aggregate, elapsed_s=5.0)}
    assert {point.step for point in points.values()} == {50}
    assert points["score"].value == 40.0 and points["examples_per_s"].value == 10.0
    assert points["errors"].value == 1.0 and points["processed"].value == 50.0


def _status(done: int, total: int = 1000) -> JobStatus:
    aggregate = CandidateAggregate(candidate_id="c", total=total, done=done, score_sum=done / 2)
    return JobStatus(job_id="j", state="running", total_tasks=total, done=done, candidates=[aggregate])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_neither_slows_nor_fails_the_evaluation_and_is_counted_once() -> None:
    settings = MlflowSettings(tracking_uri=f"http://127.0.0.1:{_closed_port()}", timeout_s=2)
    logger = MlflowLogger(settings)
    counted = EXPORT_ERRORS._value.get()
    try:
        progress = EvaluationProgress(logger, {"c": "Predict"}, None, started=time.perf_counter())
        began = time.perf_counter()
        for done in range(1, 1000, 7):
            progress(_status(done))
        time.sleep(0.6)  # past the least interval between two points: a second point is due
        progress(_status(990))
        handed_over_s = time.perf_counter() - began - 0.6
        assert handed_over_s < 0.5, handed_over_s  # a few numbers each, no request on this thread
        assert set(progress.runs) == {"c"}
        progress(_status(1000))  # the end is the result's to log, not the progress's
        assert logger.flush(30)
    finally:
        logger.close(0)
    # the run could not be opened: one failure, and its points were dropped without another
    assert logger.failures == 1 and EXPORT_ERRORS._value.get() == counted + 1
