"""RLM and CodeAct programs run their code in a predictor's sandbox pool (issue 24, ``--sandbox-pool``).

200 arithmetic questions through ``RLM``, then 40 through ``CodeAct`` (wrapped in
:mod:`e2e_sandbox_programs`; the simulated LM writes code that computes the answer: RLM's reads the
question from the REPL variable and calls ``SUBMIT``, CodeAct's extract step answers with the code's
output), on one predictor started with ``--sandbox-pool 2``: the per-example results
through Kafka equal local ``Evaluate``'s with a local pool of 2, every example ran its code in the
worker's sandbox (the predictor's ``dspex_sandbox_executions_total``), and once the predictor stopped no
Deno process it started is left. The issue asks for 200 concurrent examples, and they fit: a warm
execution takes some 10-50 ms, so on a loaded 2-core machine the worker's two Pyodide cold starts
(4-20 s each) dominate, and the test takes about a minute in all (63 s at load 6). A predictor
without ``--sandbox-pool`` fails such examples with the reason, before any LM call, and serves on.

Deno processes are counted by session (see :mod:`e2e_sandbox_checks`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, predict_program, sim_lm
from e2e_sandbox_checks import all_deno_processes, deno_processes, sandbox_executions
from e2e_sandbox_programs import ArithmeticCodeAct, ArithmeticRLM

from dspex.configuration import context
from dspex.sandbox.pool import SandboxPool
from dspex.sandbox.worker import NO_SANDBOX_MESSAGE
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 200
CODEACT_EXAMPLES = 40
POOL = 2
PROGRAMS_DIR = Path(__file__).resolve().parent


def test_rlm_and_codeact_through_a_sandbox_pool_equal_local_and_leave_no_deno(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    deno_before = all_deno_processes()
    python_path = os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    pipeline.start("aggregate")
    pipeline.start("score")
    predictor = pipeline.start(
        "predict", "--sandbox-pool", str(POOL), "--allow-module", "e2e_sandbox_programs"
    )
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    jobs = [
        (ArithmeticRLM(), devset(EXAMPLES, seed=24)),
        (ArithmeticCodeAct(), devset(CODEACT_EXAMPLES, seed=26)),
    ]

    started = time.monotonic()
    remote = [
        pipeline.evaluate([program], examples, lm, name="code-sandbox-pool")[0] for program, examples in jobs
    ]
    remote_s = time.monotonic() - started
    in_session = deno_processes(predictor.pid)
    executed = sandbox_executions(pipeline.work_dir / "prometheus-targets", predictor.name).get("ok", 0.0)
    with SandboxPool(size=POOL) as pool, context(interpreter_factory=pool):
        local = [local_evaluate(program, examples, lm) for program, examples in jobs]

    for ours, theirs in zip(remote, local, strict=True):
        assert (ours.errors, theirs.errors) == (0, 0), (ours.error_messages, theirs.error_messages)
        assert per_example(ours) == per_example(theirs)
        assert ours.score == theirs.score == 100.0  # the code computes every answer
    assert executed >= EXAMPLES + CODEACT_EXAMPLES, f"{executed} sandbox executions in the predictor"
    assert 1 <= len(in_session) <= POOL, f"the predictor's Deno processes: {in_session}"
    assert predictor.stop() == 0, predictor.log_tail()
    assert deno_processes(predictor.pid) == [], (
        f"Deno processes left by the predictor (all Deno processes: {deno_before} before, "
        f"{all_deno_processes()} after; job took {remote_s:.1f} s)"
    )


def test_without_a_pool_code_is_refused_per_example_and_the_worker_keeps_serving(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    python_path = os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    pipeline.start_workers(1, "--allow-module", "e2e_sandbox_programs")  # --sandbox-pool 0
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    examples = devset(20, seed=25)

    [refused] = pipeline.evaluate([ArithmeticRLM()], examples, lm, name="rlm-no-sandbox")
    [served] = pipeline.evaluate([predict_program()], examples, lm, name="predict-after-refusals")

    assert refused.errors == len(examples)
    assert {record.error for record in refused.records} == {f"SandboxDisabledError: {NO_SANDBOX_MESSAGE}"}
    assert sim.control.stats()["completions_ok"] == len(examples)  # refused before any LM call
    assert served.errors == 0
    pipeline.check_running()
