"""`dspex results JOB --format json` and `dspex status JOB --json`, run as the real command after a
job, agree with what the client returned: every example's score and outputs, each candidate's
score, and done/total."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import Pipeline, cot_program, devset, predict_program, sim_lm

from dspex.schemas import JobStatus, ScoreRecord
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 80


def dspex(pipeline: Pipeline, *args: str) -> str:
    """Run the real `dspex` command against the pipeline's broker and prefix; its stdout."""
    command = [sys.executable, "-m", "dspex.cli", *args, "--bootstrap", pipeline.bootstrap]
    command += ["--prefix", pipeline.prefix]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_results_and_status_commands_agree_with_the_client(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.005)
    programs = [predict_program(), cot_program()]
    job_id = shared_pipeline.submit(programs, devset(EXAMPLES, seed=5), sim_lm(sim, cache_dir), name="cli")
    final = shared_pipeline.finish(job_id)
    results = shared_pipeline.client.collect(job_id)
    assert sim.control.stats()["completions_ok"] == sim.control.stats()["requests_total"] == 2 * EXAMPLES

    lines = dspex(shared_pipeline, "results", job_id, "--format", "json").splitlines()
    records = [ScoreRecord.model_validate_json(line) for line in lines]
    status = JobStatus.model_validate_json(dspex(shared_pipeline, "status", job_id, "--json"))

    assert (status.job_id, status.state, status.done, status.total_tasks) == (job_id, "completed", 160, 160)
    assert status.errors == 0 and status.seq == final.seq
    cli_candidates = [c.candidate_id for c in status.candidates]
    assert len(cli_candidates) == 2 and len({r.candidate_id for r in records}) == 2
    for candidate_id, result in zip(cli_candidates, results, strict=True):
        aggregate = status.candidate(candidate_id)
        assert aggregate is not None
        assert (aggregate.done, aggregate.total, aggregate.errors) == (EXAMPLES, EXAMPLES, 0)
        assert aggregate.score == result.score
        mine = [r for r in records if r.candidate_id == candidate_id]
        assert [r.example_index for r in mine] == list(range(EXAMPLES))
        assert [_row(r.example_index, r.score, r.outputs) for r in mine] == [
            _row(r.index, r.score, r.prediction.to_dict() if r.prediction is not None else None)
            for r in result.records
        ]
    assert sorted(r.score for r in results) != [0.0, 0.0]  # something to agree on
    assert sim.control.stats()["requests_total"] == 2 * EXAMPLES  # reading results calls no LM
    shared_pipeline.wait_drained()


def _row(index: int, score: float, outputs: dict[str, Any] | None) -> tuple[int, float, str]:
    return index, score, json.dumps(outputs, sort_keys=True)
