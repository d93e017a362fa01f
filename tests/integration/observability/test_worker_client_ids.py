"""Each worker names itself to the brokers: the members of its consumer group carry client ids
``dspex-<worker id>``, as Kafka's own admin API reports them (no longer ``dspex`` for all)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dspex.dev.stack import LocalStack

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


def member_client_ids(admin: AdminClient, group: str) -> set[str]:
    (future,) = admin.describe_consumer_groups([group]).values()
    try:
        description = future.result(timeout=10)
    except KafkaException:  # not created yet (NOT_COORDINATOR, GROUP_ID_NOT_FOUND): no members
        return set()
    return {member.client_id for member in description.members}


def test_group_members_carry_their_workers_client_ids(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"cid{int(time.time() * 1000) % 10**9}."
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    expected = {
        f"{prefix}score": {"dspex-score-1", "dspex-score-2"},
        f"{prefix}aggregate": {"dspex-aggregate-1"},
    }
    with LocalStack(bootstrap=kafka_bootstrap, prefix=prefix, work_dir=tmp_path) as stack:
        for kind in ("aggregate", "score", "score"):
            stack.start(kind)  # type: ignore[arg-type]
        deadline = time.monotonic() + 120
        seen: dict[str, set[str]] = {}
        while seen != expected:
            stack.check_running()
            assert time.monotonic() < deadline, f"group members {seen}, expected {expected}"
            time.sleep(1)
            seen = {group: member_client_ids(admin, group) for group in expected}
