"""Retention per class of topic: durations, classes, and the topic settings they become."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.streams.retention import (
    RETENTION_CLASSES,
    describe_duration,
    parse_duration,
    parse_retention,
    retention_config,
)
from dspex.streams.topics import ROLES, TopicRegistry

DAY_MS = 86_400_000


def test_durations_in_every_unit_and_forever() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "12h", "7d", "2w")] == [
        90_000,
        1_800_000,
        43_200_000,
        7 * DAY_MS,
        14 * DAY_MS,
    ]
    assert parse_duration("forever") == -1
    assert [describe_duration(ms) for ms in (7 * DAY_MS, 36 * 3_600_000, 90_000, -1)] == [
        "7d",
        "36h",
        "90s",
        "forever",
    ]


@pytest.mark.parametrize("bad", ["7", "7x", "-3d", "0d", "d", ""])
def test_a_bad_duration_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="positive number and a unit"):
        parse_duration(bad)


def test_every_topic_is_in_exactly_one_class() -> None:
    classed = [role for roles in RETENTION_CLASSES.values() for role in roles]
    assert sorted(classed) == sorted(ROLES)


def test_classes_become_topic_settings_and_reach_the_registry() -> None:
    config = retention_config(parse_retention(["results=30d", "work=2d", "state=1d", "dlq=forever"]))
    registry = TopicRegistry("t.", config=config)
    for role in ("jobs", "scores"):
        assert registry.spec(role).config["retention.ms"] == str(30 * DAY_MS)
    for role in ("tasks", "predictions", "submit"):
        assert registry.spec(role).config["retention.ms"] == str(2 * DAY_MS)
    assert registry.spec("dlq").config["retention.ms"] == "-1"
    status = registry.spec("status").config
    # compacted as before; purged values leave within a day; tombstones outlive the job records
    assert status["cleanup.policy"] == "compact"
    assert status["max.compaction.lag.ms"] == str(DAY_MS)
    assert status["delete.retention.ms"] == str(30 * DAY_MS)
    assert "retention.ms" not in registry.spec("candidates").config
    assert registry.spec("blobs").config["retention.ms"] == str(7 * DAY_MS)  # the default stays


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["scores=7d"], "CLASS one of work, results"),
        (["results"], "CLASS=DURATION"),
        (["state=forever"], "give state a duration"),
    ],
)
def test_bad_retention_items_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_retention(items)


def test_the_registry_refuses_settings_for_unknown_roles() -> None:
    with pytest.raises(ConfigurationError, match="unknown topic roles"):
        TopicRegistry("t.", config={"nope": {"retention.ms": "1"}})
