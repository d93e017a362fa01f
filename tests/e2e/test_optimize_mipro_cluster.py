"""MIPROv2 as a cluster optimization: the same program as locally, and a resume after SIGKILL.

MIPROv2 auto="light" on 20 train / 60 validation examples of the simulated LM's task (more than 50,
so trials are scored on minibatches of 35, with full evaluations in between), first locally with a
LocalExecutor (the reference: best program, trial history, LM requests per step), then through
Kafka with `dspex worker optimize`, against the same deterministic simulated LM with caches off.

Crash and resume runs with ``trials_per_step=1`` (a checkpoint after every trial) and is
event-driven: the simulated LM holds requests once the reference's requests up to the k-th trial
are through, so the worker is stuck in trial k+1 when the checkpoint of trial k is on the
optimizer-state topic; it is killed with SIGKILL and a new worker takes over. The work lost is at
most one trial's.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from e2e_optimize import (
    LocalRun,
    OptimizeCase,
    checkpoint_steps,
    kill_after_checkpoint,
    local_run,
    optimize_like_local,
    resumed_like_local,
    start_cluster,
    submit,
    wait_job,
)
from e2e_pipeline import Pipeline, devset, sim_lm
from e2e_react_tools import add, multiply

from dspex.modules import ReAct
from dspex.primitives import Module
from dspex.schemas import TrialRecord
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = OptimizeCase(
    "mipro", knobs={"auto": "light"}, seed=9, train=devset(20, seed=31), val=devset(60, seed=32)
)
ONE_PER_STEP = replace(CASE, knobs={"auto": "light", "trials_per_step": 1})
TOOLS_DIR = Path(__file__).resolve().parent  # e2e_react_tools: the tools the workers may import


def react_program() -> Module:
    """Two predictors (``react``, ``extract.predict``) and tools from an allowed module."""
    return ReAct("question -> answer: int", tools=[add, multiply], max_iters=4)


REACT = replace(CASE, program=react_program)
# DSPy's manual mode: candidates set on the optimizer, trials and minibatch size on its compile
COMPILED = replace(
    CASE, knobs={"auto": None, "num_candidates": 3}, compile_options={"num_trials": 5, "minibatch_size": 20}
)


def search_trials(run: LocalRun) -> list[TrialRecord]:
    """The trials after the default program's (trial 0), in order."""
    return [t for t in run.trials if t.kind in ("full", "minibatch")][1:]


def searched(trials: list[TrialRecord]) -> int:
    return sum(t.kind in ("full", "minibatch") for t in trials)


def trial_numbers(trials: list[TrialRecord]) -> list[int]:
    """Each trial's number, from its note ("trial 6: full evaluation ...; ...")."""
    found = [re.match(r"trial (\d+)\b", t.note or "") for t in trials]
    return [int(match.group(1)) if match else -1 for match in found]


def test_mipro_cluster_optimization_equals_local_and_resumes_after_sigkill(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    assert searched(reference.trials) == reference.num_trials == 13  # DSPy's light count for these sizes
    one_per_step = local_run(sim, lm, ONE_PER_STEP)
    assert searched(one_per_step.trials) == one_per_step.num_trials == 13
    trials = search_trials(one_per_step)
    assert len({t.step for t in trials}) == len(trials)  # a step (and a checkpoint) per trial
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    # 1. uninterrupted, today's batching: the same program and history as locally
    optimize_like_local(pipeline, lm, CASE, reference)

    # 2. one trial per step, killed after its k-th trial (the next one is the first full evaluation,
    # the largest), resumed by a new worker from the checkpoint of trial k
    k = next(i for i, t in enumerate(trials) if t.kind == "full")
    assert k >= 2 and trials[k].step == trials[k - 1].step + 1
    held_step = trials[k].step  # steps done when trial k's checkpoint is written
    crash = kill_after_checkpoint(
        pipeline,
        sim,
        lm,
        ONE_PER_STEP,
        hold_after=sum(one_per_step.calls_per_step[:held_step]),
        step=held_step,
        what=f"the checkpoint of trial {k} (step {held_step}) while trial {k + 1} is held",
    )
    assert not any(step > held_step for step in crash.steps_at_kill)

    status = resumed_like_local(pipeline, crash, one_per_step)
    resumed = [t for t in status.steps if t.kind in ("full", "minibatch")][1:]
    assert trial_numbers(resumed) == list(range(1, one_per_step.num_trials))  # no gap, no repeat
    steps = checkpoint_steps(pipeline, crash.job_id)
    assert steps == list(range(1, len(one_per_step.calls_per_step) + 1)), steps
    spent = crash.spent(sim)
    # at most one full run plus one trial: the largest single trial's requests
    largest_trial = max(one_per_step.calls_per_step[t.step] for t in trials)
    logging.getLogger(__name__).warning(
        "MIPRO crash/resume: killed after trial %s; %s requests for a %s-request run (largest trial %s)",
        k, spent, one_per_step.calls, largest_trial,
    )  # fmt: skip
    assert one_per_step.calls <= spent <= one_per_step.calls + largest_trial, (
        spent,
        one_per_step.calls_per_step,
    )


def test_mipro_compile_options_reach_the_cluster_run(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, COMPILED)
    # 5 trials asked for: DSPy adds the default program's and one full evaluation per 5 minibatch trials
    assert searched(reference.trials) == reference.num_trials == 7
    minibatches = {t.num_examples for t in reference.trials if t.kind == "minibatch"}
    assert minibatches == {20}, minibatches
    pipeline = pipeline_factory()
    start_cluster(pipeline)
    optimize_like_local(pipeline, lm, COMPILED, reference)


def test_mipro_optimizes_a_two_predictor_program_through_kafka_as_locally(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, REACT)
    # two predictors: an instruction and a demo set to choose for each, so more trials than one's 13
    assert searched(reference.trials) == reference.num_trials == 25
    python_path = os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    start_cluster(pipeline, "--allow-module", "e2e_react_tools")

    # the best program is compared by id: loading it here would need the tools' module allowed
    status = wait_job(pipeline, submit(pipeline, lm, REACT))
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials
    choices = [t.note or "" for t in status.steps if t.kind in ("full", "minibatch")][1:]
    assert all("0_predictor_instruction" in c and "1_predictor_instruction" in c for c in choices)
