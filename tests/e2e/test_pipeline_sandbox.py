"""RLM programs run their code in a predictor's sandbox pool (issue 24, ``--sandbox-pool``).

200 arithmetic questions through ``RLM`` (wrapped in :mod:`e2e_sandbox_programs`; the simulated
LM writes code that reads the question from the REPL variable, computes the answer and calls
``SUBMIT``) on one predictor started with ``--sandbox-pool 2``: the per-example results through
Kafka equal local ``Evaluate``'s with a local pool of 2, every example ran its code in the worker's
sandbox (the predictor's ``dspex_sandbox_executions_total``), and once the predictor stopped no
Deno process it started is left. The issue asks for 200 concurrent examples, and they fit: a warm
execution takes some 10-50 ms, so on a loaded 2-core machine the worker's two Pyodide cold starts
(4-20 s each) dominate, and the test takes about a minute in all (63 s at load 6). A predictor
without ``--sandbox-pool`` fails such examples with the reason, before any LM call, and serves on.

Deno processes are counted by session: workers are started in sessions of their own and the
sandbox does not start new ones, so a Deno process in the predictor's session is one it started,
whether or not it is still its child (another test's sandboxes, running at the same time on the
same machine, are not counted).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, predict_program, sim_lm
from e2e_sandbox_programs import ArithmeticRLM

from dspex.configuration import context
from dspex.sandbox.pool import SandboxPool
from dspex.sandbox.worker import NO_SANDBOX_MESSAGE
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 200
POOL = 2
PROGRAMS_DIR = Path(__file__).resolve().parent


def deno_processes(session: int) -> list[int]:
    """Live Deno processes in ``session`` (zombies, already dead, are not counted)."""
    found = []
    for process in psutil.process_iter(["name", "status"]):
        if process.info["name"] != "deno" or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getsid(process.pid) == session:
                found.append(process.pid)
        except ProcessLookupError:
            continue
    return found


def all_deno_processes() -> int:
    return sum(1 for process in psutil.process_iter(["name"]) if process.info["name"] == "deno")


def sandbox_executions(targets_dir: Path, worker_id: str) -> float:
    """The predictor's ``dspex_sandbox_executions_total{outcome="ok"}``, read from its /metrics."""
    [entry] = json.loads((targets_dir / f"{worker_id}.json").read_text())
    with urllib.request.urlopen(f"http://{entry['targets'][0]}/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = 'dspex_sandbox_executions_total{outcome="ok"} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def test_rlm_through_a_sandbox_pool_equals_local_and_leaves_no_deno(
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
    program = ArithmeticRLM()
    examples = devset(EXAMPLES, seed=24)

    started = time.monotonic()
    [remote] = pipeline.evaluate([program], examples, lm, name="rlm-sandbox-pool")
    remote_s = time.monotonic() - started
    in_session = deno_processes(predictor.pid)
    executed = sandbox_executions(pipeline.work_dir / "prometheus-targets", predictor.name)
    with SandboxPool(size=POOL) as pool, context(interpreter_factory=pool):
        local = local_evaluate(program, examples, lm)

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    assert remote.score == local.score == 100.0  # the code computes every answer
    assert executed >= EXAMPLES, f"{executed} sandbox executions in the predictor"
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
