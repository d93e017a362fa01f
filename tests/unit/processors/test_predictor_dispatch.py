"""How the predictor wires its consumer: read-ahead into a fair queue, tasks started as the LM takes them."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.processors.common import WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.fairqueue import FairQueue
from dspex.processors.predictor import DISPATCH_HEADROOM_MIN, Predictor
from dspex.schemas import Task, headers_for
from dspex.streams.config import KafkaSettings

SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never reached: nothing here connects


def _predictor(concurrency: int = 1024, initial_limit: int = 64, **kwargs: int) -> Predictor:
    endpoints = EndpointOptions(initial_limit=initial_limit)
    options = WorkerOptions(concurrency=concurrency, metrics=False, endpoints=endpoints)
    return Predictor(SETTINGS, options, **kwargs)


def test_the_consumer_reads_ahead_into_a_fair_queue() -> None:
    options = _predictor(concurrency=100, read_ahead=1000, read_ahead_bytes=4096).runtime_options()
    assert isinstance(options["backlog"], FairQueue)
    assert (options["high_watermark"], options["low_watermark"]) == (1100, 600)
    assert options["max_backlog_bytes"] == 4096


def test_tasks_start_up_to_the_lm_limits_plus_headroom() -> None:
    predictor = _predictor(concurrency=1024, initial_limit=64)
    assert predictor.dispatch_limit() == 1024  # no LM yet: the concurrency
    predictor.endpoints.limiter("http://a/v1")
    predictor.endpoints.limiter("http://b/v1")
    predictor._window_at = -1.0  # past the refresh interval
    assert predictor.dispatch_limit() == 128 + max(DISPATCH_HEADROOM_MIN, 64)


def test_read_ahead_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="read_ahead"):
        _predictor(read_ahead=0)


class _Task:
    """The part of a consumed message the budget reads: its headers."""

    def __init__(self, budget: int | None) -> None:
        self._headers = headers_for(
            Task.build(
                job_id="j",
                candidate_id="c",
                example_index=0,
                example={"q": 1},
                input_keys=["q"],
                max_in_flight=budget,
            )
        )

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def test_a_jobs_budget_is_what_its_tasks_ask_for_at_most_the_concurrency() -> None:
    predictor = _predictor(concurrency=100)
    budgets = [predictor._job_budget(_Task(budget)) for budget in (8, 5000, None)]  # type: ignore[arg-type]
    assert budgets == [8, 100, None]


def test_a_lagging_event_loop_holds_the_tasks_started_below_the_lm_window() -> None:
    predictor = _predictor(concurrency=1024)
    assert predictor.dispatch_limit() == 1024
    predictor.loop_window.observe(lag_s=1.0, running=1000, now=1.0)
    assert predictor.dispatch_limit() == 800
