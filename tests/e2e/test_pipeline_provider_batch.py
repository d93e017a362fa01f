"""Batch mode through the cluster: the same per-example results as online, at the batch price.

A job with ``mode="batch"`` runs on the predictors without one online LM call: each task parks its
request on the lm-requests topic, the provider-batch worker submits them to the simulated LM's Batch
API (a simulation of OpenAI's ``/v1/files`` + ``/v1/batches``), and the answered tasks come back to
the predictors. Compared with the same job online on the same pipeline: every example's score and
outputs, the tokens and the calls are the same; the cost is half (a price registered for the
simulated model); the simulated LM saw batch requests only, each answered once.

A program of two LM calls in sequence takes two batch rounds per example; with the provider-batch
worker killed -9 twice mid-job and a share of batch requests failing (sent again in new batches), the
job still gives the online results and no request answered once is ever submitted again. With
``--batch-retry online``, the requests of a batch that expired go to the online endpoint instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_cost_programs import DraftThenCheck
from e2e_pipeline import Pipeline, devset, per_example, predict_program, read_topic, sim_lm, wait_for
from typer.testing import CliRunner

from dspex.cli import app as cli_app
from dspex.schemas.headers import HEADER_JOB_ID
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 5_000
PRICE = "openai/simulated=2,8"  # USD per 1M prompt / completion tokens, this test's own
MAX_REQUESTS = 500  # per provider batch: a 5,000-request round is split into at least ten
BATCH_ARGS = ("--batch-window", "0.5", "--batch-poll", "0.2", "--batch-max-requests", str(MAX_REQUESTS))
TWO_CALL_EXAMPLES = 5_000
EXPIRED_EXAMPLES = 24
PROGRAMS_DIR = Path(__file__).parent


def test_a_batch_mode_job_equals_the_online_one_at_half_the_price(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(batch_delay=0.3)
    lm = sim_lm(sim, cache_dir)
    pipeline = pipeline_factory()
    pipeline.start("aggregate")
    pipeline.start("score")
    pipeline.start("predict", "--price", PRICE)
    pipeline.start("provider-batch", *BATCH_ARGS)
    pipeline.wait_ready()
    examples = devset(EXAMPLES)

    [online] = pipeline.evaluate([predict_program()], examples, lm, name="online")
    assert sim.control.stats()["completions_ok"] == EXAMPLES
    sim.control.reset()

    [batched] = pipeline.evaluate([predict_program()], examples, lm, name="batch", mode="batch")
    stats = sim.control.stats()
    assert stats["by_path"].get("chat", 0) == 0 and stats["completions_ok"] == 0  # nothing online
    batch = stats["batch"]
    assert batch["requests_ok"] == EXAMPLES and batch.get("repeated", 0) == 0
    assert batch["created"] >= EXAMPLES // MAX_REQUESTS  # split by the worker's request limit
    assert stats["files"]["uploaded"] == batch["created"]

    assert (batched.errors, online.errors) == (0, 0), batched.error_messages
    assert per_example(batched) == per_example(online)
    assert batched.score == online.score and 0 < online.score < 100
    assert (batched.usage.lm_calls, online.usage.lm_calls) == (EXAMPLES, EXAMPLES)
    assert batched.usage.total_tokens == online.usage.total_tokens
    assert online.usage.cost_usd > 0
    assert batched.usage.cost_usd == pytest.approx(online.usage.cost_usd / 2, rel=1e-9)


def test_two_calls_in_sequence_survive_kills_and_failed_requests(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(batch_delay=1.0, batch_fail=0.1, seed=3)
    lm = sim_lm(sim, cache_dir)
    path = os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": path})
    pipeline.start("aggregate")
    pipeline.start("score")
    pipeline.start("predict", "--allow-module", "e2e_cost_programs")
    tries = ("--batch-max-tries", "8")  # 10% failing 8 times in a row: 1e-8 per request
    first = pipeline.start("provider-batch", *BATCH_ARGS, *tries)
    pipeline.wait_ready()
    examples = devset(TWO_CALL_EXAMPLES, seed=11)
    [online] = pipeline.evaluate([DraftThenCheck()], examples, lm, name="online")
    assert online.errors == 0, online.error_messages
    sim.control.reset()
    # The provider holds every batch until the first worker is gone: its kill is mid-job whatever
    # the machine's speed, and the second worker has both rounds' answers still to come.
    sim.control.configure(batch_hold=True)

    job_id = pipeline.submit([DraftThenCheck()], examples, lm, name="batch", mode="batch")

    def batches_created(at_least: int) -> dict[str, Any] | None:
        stats = sim.control.stats()
        return stats if stats["batch"].get("created", 0) >= at_least else None

    wait_for(lambda: batches_created(1), 120, "a first provider batch", detail=pipeline.report)

    def at_provider() -> dict[str, Any] | None:  # what `dspex batches` shows mid-job
        args = ["batches", "--job", job_id, "--json"]
        args += ["--bootstrap", pipeline.bootstrap, "--prefix", pipeline.prefix]
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        return rows[0] if rows and rows[0]["at_provider"] > 0 else None

    shown = wait_for(at_provider, 60, "dspex batches to show the job's requests", detail=pipeline.report)
    assert shown["job_id"] == job_id and shown["batches"] >= 1 and shown["model"] == "openai/simulated"
    first.kill()  # -9: its batches in flight and its uncommitted requests must not be lost
    second = pipeline.start("provider-batch", *BATCH_ARGS, *tries)
    created = sim.control.stats()["batch"]["created"]
    sim.control.configure(batch_hold=False)
    wait_for(
        lambda: batches_created(created + 1), 120, "a batch by the second worker", detail=pipeline.report
    )
    second.kill()
    assert "resuming" in second.log_path.read_text()  # it took over the first one's batches in flight
    pipeline.start("provider-batch", *BATCH_ARGS, *tries)

    assert pipeline.finish(job_id).state == "completed"
    [batched] = pipeline.client.collect(job_id)
    assert batched.errors == 0, batched.error_messages
    assert per_example(batched) == per_example(online)
    assert batched.usage.lm_calls == online.usage.lm_calls == 2 * TWO_CALL_EXAMPLES
    stats = sim.control.stats()
    assert stats["by_path"].get("chat", 0) == 0
    batch = stats["batch"]
    assert batch.get("repeated", 0) == 0  # nothing answered was submitted twice, kills included
    assert batch["requests_ok"] == 2 * TWO_CALL_EXAMPLES  # each of the two rounds, answered once
    assert batch.get("requests_failed", 0) > 0  # failures happened and were sent again


def test_an_expired_batch_is_answered_online_by_policy(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    # every batch expires a third of the way through: a third answered by it, the rest online
    sim = sim_factory(batch_delay=3.0, batch_expire_after=1.0)
    lm = sim_lm(sim, cache_dir)
    pipeline = pipeline_factory()
    pipeline.start("aggregate")
    pipeline.start("score")
    pipeline.start("predict", "--price", PRICE)
    pipeline.start("provider-batch", *BATCH_ARGS, "--batch-retry", "online")
    pipeline.wait_ready()
    examples = devset(EXPIRED_EXAMPLES, seed=5)
    [online] = pipeline.evaluate([predict_program()], examples, lm, name="online")
    sim.control.reset()

    [batched] = pipeline.evaluate([predict_program()], examples, lm, name="batch", mode="batch")
    assert batched.errors == 0, batched.error_messages
    assert per_example(batched) == per_example(online)
    batch = sim.control.stats()["batch"]
    expired, answered = batch.get("requests_expired", 0), batch["requests_ok"]
    assert expired > 0 and answered > 0 and expired + answered == EXPIRED_EXAMPLES
    assert sim.control.stats()["by_path"]["chat"] == expired  # each expired request asked online once
    # the batch-answered calls at half price, the online ones at the full price
    assert online.usage.cost_usd > batched.usage.cost_usd > online.usage.cost_usd / 2
    assert_purge_deletes_the_answers(pipeline)


def assert_purge_deletes_the_answers(pipeline: Pipeline) -> None:
    """Every answer (batch or online) names the job that asked in its header; `dspex purge` of that
    job leaves each key's latest record on the compacted lm-responses topic a tombstone."""
    topic = pipeline.registry.name("lm-responses")
    answers = read_topic(pipeline.settings, topic)
    named = {dict(message.headers() or [])[HEADER_JOB_ID] for message in answers}
    assert len(named) == 1 and len({message.key() for message in answers}) == EXPIRED_EXAMPLES
    job_id = named.pop().decode()
    status = pipeline.status(job_id)
    assert status is not None and status.name == "batch"
    args = ["purge", job_id, "--yes", "--bootstrap", pipeline.bootstrap, "--prefix", pipeline.prefix]
    purged = CliRunner().invoke(cli_app, args)
    assert purged.exit_code == 0, purged.output
    assert f"{topic}: {EXPIRED_EXAMPLES} provider-batch answer(s)" in purged.output
    latest = {message.key(): message.value() for message in read_topic(pipeline.settings, topic)}
    assert len(latest) == EXPIRED_EXAMPLES and set(latest.values()) == {None}
