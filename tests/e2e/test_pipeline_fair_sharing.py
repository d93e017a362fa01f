"""Fair sharing between jobs, by default: a small job is not stuck behind a big one.

One predictor serves a 5,000-example job with the simulated LM answering in 1 s. A 20-example job
submitted with no priority 1 s later completes within 3x its time alone (measured first, on the
same warm pipeline), while the big job has not done half its tasks; the big job still completes
exactly (every example once in its results). Before the fair queue the small job finished at the
same moment as the big one (issue 18: 21.8 s instead of 1.2 s).

The small job is submitted once the big one's submission has returned (and at least 1 s after it
began), so every partition holds all of the big job's tasks ahead of the small job's: the hardest
order, and one that does not depend on how fast this machine publishes. The predictor's
concurrency and initial LM limit are pinned at 256 so that the big job lasts about 20 s whatever
the defaults become and however loaded the machine is (a CPU-bound predictor with 1,024 tasks in
flight gives every task, a small job's too, 1,024 / throughput seconds of latency: Little's law,
not queueing order). Nothing else is set: no priority, no fairness flag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, devset, predict_program, sim_lm

from dspex.lm import LM
from dspex.primitives import Module
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BIG, SMALL = 5000, 20
LATENCY_S = 1.0
SUBMIT_GAP_S = 1.0
SLOWDOWN_ALLOWED = 3.0
PREDICTOR_ARGS = ("--concurrency", "256", "--lm-initial-limit", "256")


def _timed(pipeline: Pipeline, program: Module, n: int, lm: LM, seed: int) -> float:
    """Seconds from submitting an ``n``-example job to seeing it completed."""
    started = time.monotonic()
    job_id = pipeline.submit([program], devset(n, seed=seed), lm, name=f"alone-{n}")
    status = pipeline.finish(job_id)
    assert (status.state, status.done) == ("completed", n), pipeline.report()
    return time.monotonic() - started


def test_a_small_job_submitted_after_a_big_one_completes_long_before_it(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    pipeline = pipeline_factory()
    pipeline.start_workers(1, *PREDICTOR_ARGS)
    pipeline.wait_ready()
    lm = sim_lm(sim_factory(latency=LATENCY_S), cache_dir)
    program = predict_program()
    _timed(pipeline, program, 5, lm, seed=1)  # warm-up: programs built, LM clients connected
    alone = _timed(pipeline, program, SMALL, lm, seed=2)

    big_started = time.monotonic()
    big_id = pipeline.submit([program], devset(BIG, seed=3), lm, name="big")
    time.sleep(max(0.0, big_started + SUBMIT_GAP_S - time.monotonic()))
    small_started = time.monotonic()
    small_id = pipeline.submit([program], devset(SMALL, seed=4), lm, name="small")
    small = pipeline.finish(small_id)
    shared = time.monotonic() - small_started
    big_then = pipeline.status(big_id)

    assert (small.state, small.done, small.errors) == ("completed", SMALL, 0)
    assert shared <= SLOWDOWN_ALLOWED * alone, (
        f"the small job took {shared:.2f} s beside the big one, {alone:.2f} s alone"
    )
    assert big_then is not None and not big_then.finished and big_then.done < BIG // 2, (
        f"the big job was {big_then} when the small one completed"
    )

    big = pipeline.finish(big_id)
    big_elapsed = time.monotonic() - big_started
    assert (big.state, big.total_tasks, big.done, big.errors) == ("completed", BIG, BIG, 0)
    records = pipeline.client.results(big_id)
    assert [record.example_index for record in records] == list(range(BIG))  # each once, none missing
    print(f"small alone {alone:.2f} s, beside the big job {shared:.2f} s; big job {big_elapsed:.1f} s")
