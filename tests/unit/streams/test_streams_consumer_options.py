"""ConsumerOptions: one frozen object for a runtime's options, checked before anything connects."""

from __future__ import annotations

import logging

import pydantic
import pytest

from dspex.errors import ConfigurationError
from dspex.processors.common import WorkerOptions
from dspex.streams.config import FAST_GROUP_TIMING, KafkaSettings
from dspex.streams.consumer_options import (
    REJOIN_AFTER_MIN_S,
    ConsumerOptions,
    consumer_config,
    default_rejoin_after,
)

SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never reached: nothing here connects
GROUP = {"group_id": "g", "topics": ["t"], "dlq_topic": "t.dlq"}


def _config(**options: object) -> dict[str, object]:
    return consumer_config(SETTINGS, ConsumerOptions(**GROUP, **options), logging.getLogger("t"), print)


def test_watermarks_default_to_the_in_flight_bound() -> None:
    assert ConsumerOptions(**GROUP, max_in_flight=10).watermarks == (10, 5)
    assert ConsumerOptions(**GROUP, high_watermark=30, low_watermark=0).watermarks == (30, 0)


def test_options_are_frozen() -> None:
    options = ConsumerOptions(**GROUP)
    with pytest.raises(pydantic.ValidationError):
        options.max_in_flight = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_in_flight": 0}, "ConsumerOptions.max_in_flight"),
        ({"topics": []}, "ConsumerOptions.topics"),
        ({"drain_timeout": "soon"}, "ConsumerOptions.drain_timeout"),
        ({"max_inflight": 3}, "ConsumerOptions.max_inflight"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ConsumerOptions(**{**GROUP, **changes})
    assert str(caught.value).startswith(field + ":")
    assert "\n" not in str(caught.value)


def test_only_the_cooperative_assignment_strategy_is_accepted() -> None:
    with pytest.raises(ConfigurationError, match="cooperative-sticky"):
        ConsumerOptions(**GROUP, config={"partition.assignment.strategy": "range"})


def test_the_drain_must_fit_under_the_rebalance_timeout() -> None:
    with pytest.raises(ConfigurationError, match=r"max\.poll\.interval\.ms"):
        _config(drain_timeout=20.0, config={"max.poll.interval.ms": "10000"})


def test_the_config_commits_by_hand_and_carries_fast_group_timing() -> None:
    config = _config(fast_groups=True, config={"fetch.min.bytes": "1"})
    assert config["group.id"] == "g" and config["enable.auto.commit"] is False
    assert {key: config[key] for key in FAST_GROUP_TIMING} == FAST_GROUP_TIMING
    assert config["fetch.min.bytes"] == "1"
    assert default_rejoin_after(config) == REJOIN_AFTER_MIN_S  # 5 x 6 s is below the minute


def test_a_worker_builds_its_consumer_options_from_its_own() -> None:
    worker = WorkerOptions(concurrency=7, drain_timeout=3.0, fast_groups=True)
    options = worker.consumer_options(**GROUP, high_watermark=14)
    assert (options.max_in_flight, options.drain_timeout, options.fast_groups) == (7, 3.0, True)
    assert options.watermarks == (14, 7)
    assert worker.consumer_options(**GROUP, drain_timeout=0.5).drain_timeout == 0.5
