"""The terminal progress bar follows evaluations and optimizations from their status messages."""

from __future__ import annotations

import pytest

from dspex.client.progress import JobProgress
from dspex.schemas import OptimizeStatus, TrialRecord, UsageRecord


def test_an_optimization_shows_its_steps_and_best_score(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [
        TrialRecord(step=0, candidate_id="a" * 32, score=45.0, num_examples=40),
        TrialRecord(step=1, candidate_id="b" * 32, score=82.5, num_examples=40),
    ]
    status = OptimizeStatus(
        job_id="opt-1", state="running", optimizer="bootstrap-rs", steps=steps, best_score=82.5,
        usage=UsageRecord(prompt_tokens=1200, completion_tokens=300, cost_usd=0.25, lm_calls=80),
    )  # fmt: skip
    with JobProgress("opt-1", 0, enabled=True, label="optimize opt-1") as bar:
        bar.update_optimization(status)
    shown = capsys.readouterr().err
    assert "optimize opt-1" in shown and "running" in shown
    assert "score 82.5%" in shown and "1,500 tokens" in shown and "$0.2500" in shown


def test_a_disabled_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    status = OptimizeStatus(job_id="opt-2", state="running", optimizer="bootstrap-rs")
    with JobProgress("opt-2", 0, enabled=False) as bar:
        bar.update_optimization(status)
    assert capsys.readouterr().err == ""
