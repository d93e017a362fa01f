"""KNNFewShot and Ensemble programs evaluated through the cluster give what local ``Evaluate`` gives.

Neither optimizer runs as a cluster optimization (no steps to checkpoint), but the programs they
compile are candidates like any other: saved as JSON (the KNN's trainset and its vectors, the
bootstrap knobs, the ensemble's reduce function by import path), rebuilt by the predictor workers,
and run there. Each test evaluates a compiled program locally and on the shared pipeline against
its own deterministic simulated LM with every cache off: the same score, the same per-example
results, the same LM calls, and a score above the zero-shot program's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from e2e_pipeline import (
    JOB_TIMEOUT_S,
    METRIC,
    Pipeline,
    devset,
    local_evaluate,
    per_example,
    predict_program,
    sim_lm,
    wait_quiet,
)

from dspex.client import Client
from dspex.configuration import context
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.modules import majority
from dspex.optimizers import Ensemble, KafkaExecutor, KNNFewShot
from dspex.optimizers.labeled import labeled_program
from dspex.primitives import Module
from dspex.primitives.saving import load_program
from dspex.serialization import dump_program
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRAIN, VAL = devset(12, seed=31), devset(20, seed=32)


def _knn_program(pipeline: Pipeline, lm: LM) -> Module:
    """KNNFewShot compiled with the cluster as its executor (compile itself only embeds the trainset)."""

    async def go() -> Module:
        async with Client(pipeline.bootstrap, prefix=pipeline.prefix) as client:
            knn = KNNFewShot(4, TRAIN, metric=METRIC, max_bootstrapped_demos=2, max_labeled_demos=4)
            with context(lm=lm):
                return await knn.acompile(predict_program(), executor=KafkaExecutor(client))

    return asyncio.run(go())


def _ensemble_program() -> Module:
    """A majority vote of three few-shot programs with different demos (they answer differently)."""
    members = [labeled_program(predict_program(), TRAIN[i * 4 : i * 4 + 4], 4) for i in range(3)]
    return Ensemble(reduce_fn=majority).compile(members)


def _cluster_evaluate(pipeline: Pipeline, program: Module, lm: LM) -> EvaluationResult:
    with context(lm=lm):
        result = pipeline.client.evaluate(program, VAL, METRIC, display_progress=False, timeout=JOB_TIMEOUT_S)
    return cast(EvaluationResult, result)


def _check_cluster_equals_local(pipeline: Pipeline, sim: SimulatedLMServer, program: Module, lm: LM) -> None:
    # the saved program rebuilds as itself (what a predictor worker does with the candidate)
    assert dump_program(load_program(dump_program(program), allow_modules=())) == dump_program(program)
    zero_shot = local_evaluate(predict_program(), VAL, lm).score

    before = sim.control.stats()["requests_total"]
    local = local_evaluate(program, VAL, lm)
    local_calls = wait_quiet(sim)["requests_total"] - before
    remote = _cluster_evaluate(pipeline, program, lm)
    remote_calls = wait_quiet(sim)["requests_total"] - before - local_calls

    assert per_example(remote) == per_example(local)
    assert remote.score == local.score > zero_shot, (remote.score, local.score, zero_shot)
    # the workers made the calls the local run made, no more (e.g. no re-embedding of the trainset)
    assert remote_calls == local_calls > 0


def test_knn_few_shot_program_through_the_cluster_equals_local_and_beats_zero_shot(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    program = _knn_program(shared_pipeline, lm)
    assert sim.control.stats()["requests_total"] == 1, "compile embeds the trainset in one call"
    _check_cluster_equals_local(shared_pipeline, sim, program, lm)


def test_ensembled_program_through_the_cluster_equals_local_and_beats_zero_shot(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    _check_cluster_equals_local(shared_pipeline, sim, _ensemble_program(), lm)
