"""A tool's service goes down mid-evaluation: its breaker cuts it off, and no example fails (issue 19).

A ReActV2 agent with three tools (``add``, ``multiply``, and ``lookup``, which calls an HTTP service
of the test) evaluates arithmetic questions through Kafka on two predictors. Partway through, the
lookup service stops (its port refuses connections) for ``OUTAGE_S`` seconds, then comes back.

- No example fails: every one ends with ``submit``, and every ``+``/``*`` answer is right (the
  simulated LM answers from the ``add``/``multiply`` results; the failed lookups are observations).
- Each predictor's breaker of the ``lookup-api`` service opens and closes (its log lines), and the
  LM was told "circuit open" for lookups it never made.
- While open, the down service gets no more calls than one half-open probe per open interval from
  each predictor: counted from every attempt of the tool (each appends to a file first; a refused
  connection never reaches the service) from the moment that predictor's breaker opened (the time
  of its log line), not from a fixed delay after the stop, which a loaded machine can outlast.

The issue's case: 20 s down during a 500-example evaluation (``EXAMPLES``, ``OUTAGE_S``), at most
``PREDICTOR_CONCURRENCY`` in flight per predictor with a slower simulated LM so the evaluation
outlasts the outage (ten open intervals of the lookup policy: the bound is exercised many times).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_agent_tools import LOOKUP_POLICY, add, lookup, multiply
from e2e_lookup_service import LookupService
from e2e_pipeline import Pipeline, devset, log_tail, sim_lm, wait_for

from dspex.adapters import JSONAdapter
from dspex.dev.stack import WorkerProcess
from dspex.evaluate import EvaluationResult
from dspex.modules import ReActV2
from dspex.testing import SimulatedLMServer
from dspex.testing.task import parse_question

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 500
PREDICTORS = 2
PREDICTOR_CONCURRENCY = 4  # examples in flight per predictor: the evaluation lasts long enough
LM_LATENCY_S = 0.25
OUTAGE_S = 20.0
OPEN_S = float(LOOKUP_POLICY["open_s"])  # type: ignore[arg-type]
THRESHOLD = int(LOOKUP_POLICY["failure_threshold"])  # type: ignore[call-overload]
# A call let through just before its breaker opened can log its attempt a moment after the breaker's
# line; no probe comes this soon (the first is OPEN_S later), so attempts this close are not counted.
# It is also the slack allowed between the breaker's log line and the moment it opened.
LOG_SLACK_S = 0.5
TOOLS_DIR = Path(__file__).resolve().parent
_BREAKER = re.compile(r"circuit breaker of tool lookup-api (open|closed)")
_OPENED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*circuit breaker of tool lookup-api open", re.M
)


@pytest.fixture
def lookup_service() -> Iterator[LookupService]:
    service = LookupService().start()
    yield service
    service.stop()


def attempts(log: Path) -> list[tuple[float, int]]:
    """(unix time, pid) of every attempt of the lookup tool, in the workers."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(float(at), int(pid)) for at, pid in rows]


def test_a_down_tool_service_is_cut_off_by_its_breaker_and_no_example_fails(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    lookup_service: LookupService,
    tmp_path: Path,
) -> None:
    log = tmp_path / "lookup-attempts.log"
    python_path = os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))
    env = {
        "PYTHONPATH": python_path,
        "DSPEX_E2E_LOOKUP_URL": lookup_service.url,
        "DSPEX_E2E_LOOKUP_LOG": str(log),
    }
    pipeline = pipeline_factory(env=env)
    pipeline.start_workers(
        PREDICTORS, "--allow-module", "e2e_agent_tools", "--concurrency", str(PREDICTOR_CONCURRENCY)
    )
    pipeline.wait_ready()
    sim = sim_factory(latency=LM_LATENCY_S)
    lm = sim_lm(sim, cache_dir)
    agent = ReActV2(
        "question -> answer: int", tools=[add, multiply, lookup], max_iters=4, adapter=JSONAdapter()
    )
    examples = devset(EXAMPLES, seed=23)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(pipeline.evaluate, [agent], examples, lm, name="tool-outage")
        wait_for(lambda: len(lookup_service.accepted) >= EXAMPLES // 8, 120, "the evaluation to get going")
        down_at = time.time()
        lookup_service.stop()
        time.sleep(OUTAGE_S)  # the outage itself: a duration, not a wait for an event
        lookup_service.start()
        up_at = time.time()
        [result] = running.result(timeout=240)

    check_no_example_failed(result)
    check_breakers_opened_and_closed(pipeline, result)
    opened = {worker.pid: opened_at(worker, down_at) for worker in pipeline.stack.workers}
    check_calls_while_down(attempts(log), opened, down_at, up_at)
    after = lookup_service.accepted_between(up_at, time.time())
    assert after > 0, "no lookup after the outage: the evaluation ended too soon for this test"


def check_no_example_failed(result: EvaluationResult) -> None:
    assert result.errors == 0, result.error_messages
    for record in result.records:
        assert record.prediction is not None and record.prediction.termination_reason == "submit"
        question = parse_question(record.example.question)
        assert question is not None
        if question.op in "+*":  # answered from the add/multiply results, whatever lookup did
            assert record.prediction.answer == question.answer, (record.index, record.prediction)


def check_breakers_opened_and_closed(pipeline: Pipeline, result: EvaluationResult) -> None:
    changes = {
        worker.name: [match.group(1) for match in _BREAKER.finditer(log_tail(worker, 100_000))]
        for worker in pipeline.stack.workers
    }
    seen = {name: states for name, states in changes.items() if states}
    assert seen and all(name.startswith("predict") for name in seen), changes
    # each predictor's breaker opened (then re-opened on failed probes) and ended closed
    assert all(states[0] == "open" and states[-1] == "closed" for states in seen.values()), seen
    refused = sum(
        "circuit open" in str(outcome["value"])
        for record in result.records
        if record.prediction is not None
        for outcome in first_turn_results(record.prediction.to_dict())
    )
    assert refused > 0  # lookups answered by the breaker, never sent


def first_turn_results(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of an agent's first turn, from its history as JSON (as it comes through Kafka)."""
    results: list[dict[str, Any]] = prediction["history"]["messages"][0]["tool_calls"]["tool_call_results"][
        "tool_call_results"
    ]
    return results


def opened_at(worker: WorkerProcess, after: float) -> float | None:
    """When the worker's lookup breaker first opened at or after ``after`` (unix time, from its log)."""
    for stamp in _OPENED.findall(log_tail(worker, 100_000)):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the log's local time
        if at >= after - 0.001:  # the log's stamps are cut to the millisecond
            return at
    return None


def check_calls_while_down(
    seen: list[tuple[float, int]], opened: dict[int, float | None], down_at: float, up_at: float
) -> None:
    """At most one probe per open interval from each predictor, once its breaker opened."""
    during: dict[int, list[float]] = {}
    for at, pid in sorted(seen):
        if down_at <= at < up_at:
            during.setdefault(pid, []).append(at)
    assert len(during) <= PREDICTORS, during.keys()
    for pid, times in during.items():
        since = opened.get(pid)
        if since is None:  # too few refusals to open it (none are sent once it is open)
            assert len(times) < THRESHOLD, (pid, times, opened)
            continue
        probes = [at for at in times if at >= since + LOG_SLACK_S]
        assert not probes or probes[0] >= since + OPEN_S - LOG_SLACK_S, (pid, since, probes)
        gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
        # each probe failed, so the next one waits a whole open interval (the log keeps milliseconds)
        assert all(gap >= OPEN_S - 0.002 for gap in gaps), (pid, since, probes)
