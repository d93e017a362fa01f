"""Cost truth: a job's usage equals what the LM served, through a broker outage and a rebalance.

Every chat completion the simulated LM (a simulation, not a model) answered is an LM call some
predictor made for the job, including calls of tasks run again after a redelivery (offsets not
committed during the outage, partitions lost on the way back) and of runs that end after the job's
terminal status. So once the pipeline is quiet, the job's latest status must say exactly the
simulated LM's ``completions_ok`` calls and its prompt and completion tokens. Requests a predictor
gave up on before their answer (its handler cancelled) are counted by the simulated LM as 499, not
as completions: they were never answered, and the job is not charged for them. The program makes
two LM calls per example (``e2e_cost_programs.DraftThenCheck``), so a run cancelled between them
has an answered call that only its usage report carries.

1. Rebalance: a predictor gets SIGTERM while its LM calls are held (its handlers are cancelled
   after its 1 s drain) and a new one joins; the job completes.
2. Outage: a broker of the module's own (started in the background during test 1) stops mid-job
   while the held LM answers come in, and starts again once every predictor has given its
   partitions up as lost (past the 6 s session timeout of the workers' --fast-groups); the job
   completes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e_cost_programs import DraftThenCheck
from e2e_pipeline import Pipeline, devset, read_topic, sim_lm, wait_for, wait_quiet

from dspex.dev import DevBroker
from dspex.errors import KafkaError
from dspex.schemas import JobStatus, is_usage_report
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

OUTAGE_EXAMPLES = 300
OUTAGE_HOLD_AFTER = 80
OUTAGE_WAIT_S = 60.0
LOST = "without a chance to commit"  # what a predictor logs when its partitions are lost
REBALANCE_EXAMPLES = 400
REBALANCE_HOLD_AFTER = 120
PREDICTOR_ARGS = ("--concurrency", "64", "--drain-timeout", "1", "--allow-module", "e2e_cost_programs")
PROGRAMS_DIR = Path(__file__).parent
SETTLE_S = 60.0
BROKER_START_S = 240.0


def _env() -> dict[str, str]:
    """The predictors import the test's program from this directory. The aggregator takes a silent
    predictor for dead after 10 s, shorter than the outage: an outage must not read as deaths."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")])),
        "DSPEX_AGGREGATOR_DEAD_WORKER_AFTER": "10",
    }


@pytest.fixture(scope="module")
def outage_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], DevBroker]]:
    """A broker of this module's own (the session's is never stopped), started in the background
    while the rebalance test runs on the session's: ``outage_broker()`` waits until it is up."""
    broker = DevBroker(
        port=_free_port(),
        data_dir=tmp_path_factory.mktemp("kafka-outage"),
        heap="768m",
        startup_timeout=150.0,
    )
    with ThreadPoolExecutor(1, thread_name_prefix="outage-broker") as starter:
        starting = starter.submit(broker.start)

        def started() -> DevBroker:
            starting.result(timeout=BROKER_START_S)
            return broker

        try:
            yield started
        finally:
            starting.result(timeout=BROKER_START_S)
            broker.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_usage_equals_the_lms_count_after_a_predictor_leaves_and_one_joins(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    tmp_path: Path,
    outage_broker: Callable[[], DevBroker],  # asked for here so that it starts meanwhile
) -> None:
    pipeline = pipeline_factory(env=_env())
    pipeline.start_workers(2, *PREDICTOR_ARGS)
    pipeline.wait_ready()
    sim = sim_factory(latency=0.01)
    sim.control.hold(after=REBALANCE_HOLD_AFTER)
    job_id = submit(pipeline, sim, tmp_path, REBALANCE_EXAMPLES, seed=43)
    sim.control.wait_until(lambda s: s["held"] > 0, timeout=120)

    leaving = pipeline.stack.alive("predict")[0]
    leaving.process.send_signal(signal.SIGTERM)  # its held calls are cancelled after its drain
    joining = pipeline.start("predict", *PREDICTOR_ARGS)
    leaving.process.wait(30)
    wait_for(
        lambda: pipeline.assigned("predict").get(joining.name, 0) > 0,
        120,
        f"{joining.name} to own tasks partitions",
        poll=0.5,
        detail=pipeline.report,
        tolerate=(KafkaError,),
    )
    sim.control.release()

    status = finish(pipeline, job_id)
    assert (status.state, status.done, status.errors) == ("completed", REBALANCE_EXAMPLES, 0)
    served, status = settle(pipeline, sim, job_id)
    reports = usage_reports(pipeline)
    print(f"\nrebalance: {served['completions_ok']} calls answered, {reports} usage reports")
    assert_charged_exactly(status, served)


def test_usage_equals_the_lms_count_after_a_broker_outage(
    outage_broker: Callable[[], DevBroker],
    sim_factory: Callable[..., SimulatedLMServer],
    tmp_path: Path,
) -> None:
    broker = outage_broker()
    pipeline = Pipeline(broker.bootstrap, f"cost{uuid.uuid4().hex[:8]}.", tmp_path / "pipeline", env=_env())
    try:
        pipeline.start_workers(2, *PREDICTOR_ARGS)
        pipeline.wait_ready()
        sim = sim_factory(latency=0.02)
        sim.control.hold(after=OUTAGE_HOLD_AFTER)
        job_id = submit(pipeline, sim, tmp_path, OUTAGE_EXAMPLES, seed=41)
        sim.control.wait_until(lambda s: s["held"] > 0, timeout=120)

        broker.stop()
        sim.control.release()  # answers come in while Kafka is gone: their records wait to be sent
        # Past the session timeout the predictors give their partitions up as lost, cancelling
        # their handlers (records waiting to be sent included): the path that used to lose calls.
        wait_for(
            lambda: all(LOST in worker.log_tail(10_000) for worker in pipeline.stack.alive("predict")),
            OUTAGE_WAIT_S,
            "every predictor to lose its partitions",
            poll=0.5,
            detail=pipeline.report,
        )
        broker.start()

        status = finish(pipeline, job_id)
        assert (status.state, status.done, status.errors) == ("completed", OUTAGE_EXAMPLES, 0)
        served, status = settle(pipeline, sim, job_id)
        reports = usage_reports(pipeline)
        print(f"\noutage: {served['completions_ok']} calls answered, {reports} usage reports")
        assert_charged_exactly(status, served)
    finally:
        pipeline.close()


def submit(pipeline: Pipeline, sim: SimulatedLMServer, tmp_path: Path, n: int, seed: int) -> str:
    cache_dir = tmp_path / "lm-cache"
    cache_dir.mkdir(exist_ok=True)
    return pipeline.submit(
        [DraftThenCheck()], devset(n, seed=seed), sim_lm(sim, cache_dir), name="cost-truth"
    )


def finish(pipeline: Pipeline, job_id: str) -> JobStatus:
    # Just after the broker is back the client's reads may meet a passing leader election.
    return wait_for(
        lambda: _terminal(pipeline, job_id), 180, f"job {job_id} to end", poll=0.5, detail=pipeline.report
    )


def _terminal(pipeline: Pipeline, job_id: str) -> JobStatus | None:
    try:
        status = pipeline.status(job_id)
    except KafkaError:
        return None
    return status if status is not None and status.finished else None


def settle(pipeline: Pipeline, sim: SimulatedLMServer, job_id: str) -> tuple[dict[str, object], JobStatus]:
    """The LM's counters once nothing moves any more, and the job's status once it has caught up
    with them (late attempts are charged after the terminal status, in a new one)."""
    # Tolerant of a passing error of the admin API, just after the broker is back.
    wait_for(lambda: _drained(pipeline), 120, "predict and score lag 0", poll=0.5, tolerate=(KafkaError,))
    served = wait_quiet(sim)
    wanted = served["completions_ok"]
    deadline = time.monotonic() + SETTLE_S
    status = _terminal(pipeline, job_id)
    while (status is None or status.usage.lm_calls != wanted) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _terminal(pipeline, job_id) or status
    assert status is not None
    return served, status


def assert_charged_exactly(status: JobStatus, served: dict[str, object]) -> None:
    usage = status.usage
    charged = (usage.lm_calls, usage.prompt_tokens, usage.completion_tokens, usage.cache_hits)
    answered = (served["completions_ok"], served["prompt_tokens"], served["completion_tokens"], 0)
    assert charged == answered, (
        f"charged (calls, prompt, completion, cache hits) {charged}, LM served {answered}"
    )
    assert sum(c.usage.lm_calls for c in status.candidates) == usage.lm_calls
    # no predictor died: one stopping in order (SIGTERM) or cut off by the outage is not taken for dead
    assert status.usage_unreported is None, status.unreported_note


def usage_reports(pipeline: Pipeline) -> int:
    """How many runs were cancelled after an answered call (their UsageReports on the scores topic)."""
    messages = read_topic(pipeline.settings, pipeline.registry.name("scores"))
    return sum(is_usage_report(message.value()) for message in messages)


def _drained(pipeline: Pipeline) -> bool:
    lag = pipeline.client.lag()
    return all(kind in lag and lag[kind].total == 0 for kind in ("predict", "score"))
