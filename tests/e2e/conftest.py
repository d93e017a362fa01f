"""Fixtures of the end-to-end tests: pipelines of real worker processes and simulated LMs.

- ``pipeline_factory``: a pipeline of this test's own (own topic prefix, own processes), for tests
  that kill or add processes; stopped when the test ends.
- ``shared_pipeline``: one aggregator, one scorer and three predictors under one prefix, started
  once for the session and shared by the tests that only submit jobs (each with its own simulated
  LM, so each reads its own request counter, and each leaves the groups drained).
- ``sim_factory``: a simulated LM (a simulation, not a model) in its own process for this test.

When a test fails, its report carries every worker's log tail and the simulated LMs' counters.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import Pipeline, sim_report

from dspex.testing import SimulatedLMServer

SHARED_PREDICTORS = 3

_REPORTS = pytest.StashKey[list[Callable[[], str]]]()


def _on_failure(node: pytest.Item, report: Callable[[], str]) -> None:
    node.stash.setdefault(_REPORTS, []).append(report)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        reports = item.stash.get(_REPORTS, [])
        for index, describe in enumerate(reports):
            report.sections.append((f"e2e state {index + 1}", describe()))
    return report


def _prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}."


@pytest.fixture
def pipeline_factory(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Pipeline]]:
    """Make pipelines of this test's own: ``pipeline_factory()`` -> Pipeline (no workers yet)."""
    made: list[Pipeline] = []

    def make(**options: Any) -> Pipeline:
        pipeline = Pipeline(kafka_bootstrap, _prefix(), tmp_path / f"pipeline-{len(made) + 1}", **options)
        made.append(pipeline)
        _on_failure(request.node, pipeline.report)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()


@pytest.fixture(scope="session")
def _shared(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    pipeline = Pipeline(kafka_bootstrap, _prefix(), tmp_path_factory.mktemp("e2e-shared"))
    try:
        pipeline.start_workers(SHARED_PREDICTORS)
        pipeline.wait_ready()
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture
def shared_pipeline(_shared: Pipeline, request: pytest.FixtureRequest) -> Pipeline:
    """The session's pipeline: 1 aggregator, 1 scorer, 3 predictors, all running."""
    _on_failure(request.node, _shared.report)
    _shared.check_running()
    return _shared


@pytest.fixture
def sim_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., SimulatedLMServer]]:
    """Start simulated LMs for this test: ``sim_factory(latency=0.01)`` -> a running server."""
    started: list[SimulatedLMServer] = []

    def make(**knobs: Any) -> SimulatedLMServer:
        sim = SimulatedLMServer(log_path=tmp_path / f"sim-lm-{len(started) + 1}.log", **knobs)
        started.append(sim)
        sim.start()
        _on_failure(request.node, lambda: sim_report(sim))
        return sim

    yield make
    for sim in started:
        sim.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """This test's own LM cache directory (the cache stays off; nothing may land elsewhere)."""
    path = tmp_path / "lm-cache"
    path.mkdir()
    return path
