"""`dspex purge JOB` on a real cluster: a running job is refused, ``--force`` cancels it and purges;
afterwards `dspex results` and `dspex status` say the job was purged, and a compacted read of the
status and candidates topics has nothing for it (the scores topic keeps its records until its
retention ends, which the command lists). A late charge and a Cancel of the purged job afterwards
do not bring its status back: the aggregator read the purge and ignores them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import INSTRUCTIONS, Pipeline, devset, sim_lm

from dspex.modules import Predict
from dspex.schemas import Cancel, UsageRecord, UsageReport
from dspex.schemas.tasks import task_id_for
from dspex.signatures import make_signature
from dspex.streams.producer import AsyncProducer
from dspex.streams.reader import CompactedReader
from dspex.streams.serde import to_record
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


def dspex(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dspex.cli", *args, "--bootstrap", pipeline.bootstrap]
    command += ["--prefix", pipeline.prefix]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


async def compacted_keys(pipeline: Pipeline, role: str) -> set[str]:
    """Every key a compacted read of ``role``'s topic ends with (tombstones applied)."""
    reader: CompactedReader[bytes] = CompactedReader(pipeline.settings, pipeline.registry.name(role))  # type: ignore[arg-type]
    async with reader:
        await reader.wait_caught_up(30)
        return set(reader.snapshot())


def test_purge_refuses_a_running_job_then_force_cancels_and_purges_it(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory()
    sim.control.hold(after=3)  # the job runs, then its LM calls wait: it is still running when purged
    # a program of its own: the shared pipeline's other jobs use predict_program(), and a program
    # another job uses is kept by a purge
    own = Predict(make_signature("question -> answer", INSTRUCTIONS + " (purge test)"))
    job_id = shared_pipeline.submit([own], devset(40, seed=21), sim_lm(sim, cache_dir))
    running = shared_pipeline.wait_status(job_id, lambda s: s.state == "running", "running")
    (candidate,) = [c.candidate_id for c in running.candidates]
    short = job_id[:10]
    try:
        refused = dspex(shared_pipeline, "purge", short, "--yes")
        assert refused.returncode == 1, refused.stderr
        assert f"job {job_id} is running" in refused.stderr and "--force" in refused.stderr
        assert shared_pipeline.status(job_id) is not None  # nothing deleted

        forced = dspex(shared_pipeline, "purge", short, "--force", "--yes")
        assert forced.returncode == 0, forced.stderr
        assert f"purged job {job_id}" in forced.stdout
        assert f"{shared_pipeline.registry.name('scores')}" in forced.stdout  # listed as retained
    finally:
        sim.control.release()  # the held calls end now: late attempts of the cancelled job
    shared_pipeline.wait_drained()
    time.sleep(2)  # a status written back for a late attempt would be on the topic by now
    for role, key in (("status", job_id), ("candidates", candidate)):
        assert key not in asyncio.run(compacted_keys(shared_pipeline, role)), role
    assert asyncio.run(status_stays_away(shared_pipeline, job_id, candidate)) == []
    results = dspex(shared_pipeline, "results", job_id)
    status = dspex(shared_pipeline, "status", job_id)
    for answer in (results, status):
        assert answer.returncode == 1
        assert f"job {job_id} was purged" in answer.stderr
    overview = dspex(shared_pipeline, "status")
    assert overview.returncode == 0 and job_id[:12] not in overview.stdout


async def status_stays_away(
    pipeline: Pipeline, job_id: str, candidate: str, watch_s: float = 5.0
) -> list[str]:
    """Send a late attempt's usage (a new attempt id) and a Cancel for the purged job, then follow
    the status topic for ``watch_s``: every status of the job seen (none, once purged)."""
    reader: CompactedReader[bytes] = CompactedReader(pipeline.settings, pipeline.registry.name("status"))  # type: ignore[arg-type]
    seen: list[str] = []
    async with reader:
        await reader.wait_caught_up(30)
        assert reader.tombstoned(job_id)
        late = UsageReport(
            job_id=job_id, candidate_id=candidate, example_index=0, attempt_id="late-after-purge",
            task_id=task_id_for(job_id, candidate, 0), usage=UsageRecord(lm_calls=1), worker_id="test",
        )  # fmt: skip
        async with AsyncProducer(pipeline.settings) as producer:
            await producer.produce_record(pipeline.registry.name("scores"), to_record(late, role="scores"))
            cancel = Cancel(job_id=job_id, reason="after the purge")
            await producer.produce_record(pipeline.registry.name("jobs"), to_record(cancel, role="jobs"))
        deadline = time.monotonic() + watch_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if reader.get(job_id) is not None:
                seen.append(str(reader.get(job_id)))
    return seen
