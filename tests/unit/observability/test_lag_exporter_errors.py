"""The lag exporter's thread outlives a round that could not read a group."""

from __future__ import annotations

from dspex.errors import KafkaError
from dspex.observability.lag import GroupLagExporter
from dspex.streams.config import KafkaSettings


class _Unanswered(GroupLagExporter):
    """A broker that is restarting: lag reads fail, describe requests time out."""

    def _export_lag(self, group: str, topics: list[str]) -> None:
        if group == "g.kafka-error":
            raise KafkaError("no broker")

    def _members(self, group: str) -> int:
        raise TimeoutError


def test_a_round_that_times_out_is_logged_and_the_next_one_runs() -> None:
    polled: list[int] = []
    exporter = _Unanswered(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        {"g.kafka-error": ["t"], "g.timeout": ["t"]},
        on_poll=lambda: polled.append(1),
    )
    exporter.poll_once()
    exporter.poll_once()
    assert exporter.rounds == 2 and polled == [1, 1]
