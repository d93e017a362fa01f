"""Metrics over time without a server: a local evaluation's progress points, an optimization's
cost and tokens at each trial's step, and ``nested_evaluations=False`` for an optimization's
cluster evaluations (read from what is handed to the logger)."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from dspex import tracking
from dspex.lm.usage import Usage
from dspex.schemas import OptimizeStatus
from dspex.schemas.common import UsageRecord
from dspex.schemas.status import TrialRecord
from dspex.tracking import MlflowSettings
from dspex.tracking.callback import PARENT_RUN
from dspex.tracking.content import MetricPoint, RunContent, Step, usage_metrics
from dspex.tracking.logger import RunRef
from dspex.tracking.progress import MIN_INTERVAL_S, LocalEvaluationProgress


class HandedOver:
    """A logger that keeps what it is handed (runs opened, points, ends) instead of sending it."""

    def __init__(self, nested: bool = True) -> None:
        self.settings = MlflowSettings(tracking_uri="http://unused:5000", nested_evaluations=nested)
        self.opened: list[tuple[RunContent, RunRef | None]] = []
        self.points: list[tuple[RunRef, list[MetricPoint]]] = []
        self.ended: list[tuple[RunRef, bool]] = []
        self.logged: list[tuple[RunContent, RunRef | None]] = []

    def start(self, content: RunContent, parent: RunRef | None = None, resume: Any = None) -> RunRef:
        self.opened.append((content, parent))
        return RunRef(run_id=f"run-{len(self.opened)}")

    def log_points(self, run: RunRef, points: Any, kind: str = "progress") -> None:
        self.points.append((run, run.unsent(list(points))))

    def log(self, content: RunContent, parent: RunRef | None = None, run: RunRef | None = None) -> None:
        self.logged.append((content, run))

    def end(self, run: RunRef, failed: bool = True) -> None:
        self.ended.append((run, failed))

    def keys_at(self, key: str) -> list[tuple[int, float]]:
        return [(p.step, p.value) for _, batch in self.points for p in batch if p.key == key]


def test_a_local_evaluation_logs_points_only_once_it_has_run_a_while() -> None:
    logger = HandedOver()
    progress = LocalEvaluationProgress(logger, "Predict", None, total=100)  # type: ignore[arg-type]
    usage = Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.5, lm_calls=3)
    for done in range(1, 40):
        progress(done=done, score_sum=done / 2, errors=0, usage=usage)
    assert progress.run is None and logger.opened == []  # quicker than the least interval: no request
    time.sleep(MIN_INTERVAL_S + 0.05)
    progress(done=40, score_sum=30.0, errors=1, usage=usage)
    progress(done=41, score_sum=30.0, errors=1, usage=usage)  # too soon after the last point
    time.sleep(MIN_INTERVAL_S + 0.05)
    progress(done=100, score_sum=80.0, errors=1, usage=usage)  # the end is the result's to log
    [(content, parent)] = logger.opened
    assert content.name == "Predict eval" and content.tags["dspex.kind"] == "evaluation" and parent is None
    assert logger.keys_at("score") == [(40, 75.0)]
    assert logger.keys_at("total_tokens") == [(40, 15.0)] and logger.keys_at("errors") == [(40, 1.0)]
    [(_, rate)] = logger.keys_at("examples_per_s")
    assert 0 < rate < 40 / MIN_INTERVAL_S


def test_each_trial_keeps_the_usage_of_the_report_that_first_named_it() -> None:
    run = RunRef(run_id="r")
    first = [Step(0, 40.0, 10), Step(1, None, 0)]
    sent = run.unsent(usage_metrics(first, Usage(lm_calls=10, cost_usd=0.1, prompt_tokens=100), 2.0))
    later = [*first, Step(2, 70.0, 10)]
    sent += run.unsent(usage_metrics(later, Usage(lm_calls=30, cost_usd=0.3, prompt_tokens=300), 5.0))
    by_key: dict[str, list[tuple[int, float]]] = {}
    for point in sent:
        by_key.setdefault(point.key, []).append((point.step, point.value))
    assert by_key["lm_calls"] == [(0, 10.0), (1, 10.0), (2, 30.0)]
    assert by_key["total_tokens"] == [(0, 100.0), (1, 100.0), (2, 300.0)]
    assert by_key["cost_usd"] == [(0, 0.1), (1, 0.1), (2, 0.3)]
    assert by_key["examples_per_s"] == [(0, 5.0), (1, 5.0), (2, 4.0)]  # 10 / 2 s, then 20 / 5 s


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a callback whose logger keeps what it is handed (``nested`` set per test)."""

    def install(nested: bool) -> HandedOver:
        logger = HandedOver(nested)
        monkeypatch.setattr(tracking, "_installed", lambda: SimpleNamespace(logger=logger))
        return logger

    return install


def test_a_worker_logs_each_trials_cost_and_tokens_as_its_statuses_come(installed: Any) -> None:
    logger = installed(True)
    run = RunRef(run_id="opt")
    token = PARENT_RUN.set(run)
    try:
        tracking.log_optimization_progress(_optimize_status([40.0], 12, 0.02, 50, elapsed_s=3.0))
        tracking.log_optimization_progress(_optimize_status([40.0, 60.0], 30, 0.05, 90, elapsed_s=6.0))
    finally:
        PARENT_RUN.reset(token)
    assert logger.keys_at("score") == [(0, 40.0), (1, 60.0)]
    assert logger.keys_at("lm_calls") == [(0, 12.0), (1, 30.0)]
    assert logger.keys_at("cost_usd") == [(0, 0.02), (1, 0.05)]
    assert logger.keys_at("total_tokens") == [(0, 50.0), (1, 90.0)]
    assert logger.keys_at("examples_per_s") == [(0, 10 / 3), (1, 20 / 6)]


def test_an_optimization_not_followed_to_its_end_leaves_a_failed_run(installed: Any) -> None:
    logger = installed(True)
    tracking.begin_optimization("bootstrap-rs")  # dspex optimize, before following the job
    run = PARENT_RUN.get()
    assert run is not None and [content.name for content, _ in logger.opened] == ["bootstrap-rs optimize"]
    tracking.abandon_optimization()  # following it timed out
    assert logger.ended == [(run, True)] and PARENT_RUN.get() is None
    tracking.abandon_optimization()  # nothing left to end
    assert len(logger.ended) == 1


def test_a_client_following_an_optimization_logs_its_trials_live_then_the_whole_run(
    installed: Any,
) -> None:
    logger = installed(True)
    followed = tracking.follow_optimization("bootstrap-rs")
    assert followed is not None
    followed(_optimize_status([40.0], 12, 0.02, 50, elapsed_s=3.0))
    followed(_optimize_status([40.0, 60.0], 30, 0.05, 90, elapsed_s=6.0))
    last = _optimize_status([40.0, 60.0, 50.0], 44, 0.07, 120, elapsed_s=9.0)
    followed(last.model_copy(update={"state": "failed", "reason": "budget"}))
    assert logger.keys_at("lm_calls") == [(0, 12.0), (1, 30.0)]  # the terminal status is the run's
    followed.completed(None, knobs={"num_candidate_programs": 2}, seed=3, trainset=None)
    [(content, run)] = logger.logged
    assert run is followed.run and content.failed and content.params["seed"] == "3"
    calls = [(p.step, p.value) for p in run.unsent(content.metrics) if p.key == "lm_calls"]
    assert calls == [(2, 44.0), (3, 44.0)]  # the trial no running status named, then the whole run


def test_a_client_that_stops_following_ends_the_run_failed(installed: Any) -> None:
    logger = installed(True)
    followed = tracking.follow_optimization("copro")
    assert followed is not None
    followed(_optimize_status([40.0], 12, 0.02, 50, elapsed_s=3.0))
    followed.completed(None, knobs={}, seed=None, trainset=None)  # a timeout: no terminal status
    assert logger.ended == [(followed.run, True)] and logger.logged == []


@pytest.mark.parametrize("nested", [True, False])
def test_an_optimizations_cluster_evaluations_are_child_runs_only_when_nested(
    installed: Any, nested: bool
) -> None:
    installed(nested)
    submission = SimpleNamespace(program_ids=[], specs=[])
    assert tracking.evaluation_progress(submission) is not None  # not an optimization's: logged
    token = PARENT_RUN.set(RunRef(run_id="opt"))
    try:
        progress = tracking.evaluation_progress(submission)
    finally:
        PARENT_RUN.reset(token)
    assert (progress is not None) == nested


def _optimize_status(
    scores: list[float], calls: int, cost: float, tokens: int, *, elapsed_s: float
) -> OptimizeStatus:
    trials = [
        TrialRecord(step=i, candidate_id=f"c{i}", score=s, num_examples=10) for i, s in enumerate(scores)
    ]
    status = OptimizeStatus(
        job_id="j",
        state="running",
        optimizer="bootstrap-rs",
        steps=trials,
        usage=UsageRecord(lm_calls=calls, cost_usd=cost, completion_tokens=tokens),
    )
    started = status.updated_at - timedelta(seconds=elapsed_s)
    return status.model_copy(update={"started_at": started})
