"""`dspex topics create` against a real broker, through a typer app of the test's own."""

from __future__ import annotations

import time

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli import topics
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main() -> None:
        """Root of the test's app."""

    topics.register(root)
    return root


def test_topics_create_is_idempotent(app: typer.Typer, kafka_bootstrap: str, topic_prefix: str) -> None:
    runner = CliRunner()
    args = [
        "topics",
        "create",
        "--bootstrap",
        kafka_bootstrap,
        "--prefix",
        topic_prefix,
        "--partitions",
        "10",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"created {topic_prefix}tasks (10 partitions)" in first.output
    assert f"created {topic_prefix}candidates (4 partitions, compacted)" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "created" not in second.output
    assert f"exists  {topic_prefix}tasks" in second.output
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    assert KafkaAdmin(settings).partition_counts([f"{topic_prefix}tasks"]) == {f"{topic_prefix}tasks": 10}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix", "bad prefix"], "may only contain"),
        (["--partitions", "4"], "at least 8 partitions"),
    ],
)
def test_bad_usage_exits_2_before_touching_a_broker(app: typer.Typer, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["topics", "create", "--bootstrap", "127.0.0.1:9", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_no_broker_exits_1_within_seconds(app: typer.Typer, topic_prefix: str) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["topics", "create", "--bootstrap", "127.0.0.1:9", "--prefix", topic_prefix]
    )
    assert result.exit_code == 1
    assert "no Kafka broker answered at 127.0.0.1:9" in result.output
    assert time.monotonic() - started < 10
