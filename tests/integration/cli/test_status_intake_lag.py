"""`dspex status` shows the intake worker's group lag on the submit topic next to the other groups."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from dspex.cli import app
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_submit_messages_nobody_expanded_are_the_intake_groups_lag(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    producer = Producer(settings.confluent())
    for i in range(3):
        producer.produce(registry.name("submit"), b"{}", key=f"job-{i}".encode())
    assert producer.flush(30) == 0
    options = ["--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix]

    overview = json.loads(CliRunner().invoke(app, ["status", "--json", *options]).stdout)
    intake = overview["lag"]["intake"]
    assert (intake["group"], intake["total"]) == (f"{registry.prefix}intake", 3)
    assert intake["by_topic"] == {registry.name("submit"): 3}

    text = CliRunner().invoke(app, ["status", *options]).stdout
    rows = text.split("lag per group:")[1].split()
    assert rows[rows.index(f"{registry.prefix}intake") + 1] == "3"
    assert f"{registry.prefix}predict" in rows  # next to the others
