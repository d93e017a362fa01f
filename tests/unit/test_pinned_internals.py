"""The private parts of faust-streaming and aiokafka the aggregator relies on still exist (and
anyio's thread state, last test).

pyproject.toml pins both to the minor versions this passes on. Raising a pin starts here: a
failure names what moved, before an aggregator finds out at run time (an AttributeError in the
consumer thread, or a setting silently ignored).

Where each is used: ``_fetch_max_wait_ms`` (aggregate_fetch: the 100 ms long poll), the consumer's
``_read_offset``, ``seek_wait`` and ``_getmany`` (aggregate_resync: reading a partition again), a table's
``data`` and ``send_changelog`` (aggregator: one write per key, on the job's partition).
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer

from dspex.processors.aggregate_fetch import FETCH_MAX_WAIT_MS, use_prompt_fetch


def _minor(package: str) -> tuple[int, int]:
    major, minor, *_ = version(package).split(".")
    return int(major), int(minor)


def test_the_installed_versions_are_the_pinned_minors() -> None:
    assert _minor("faust-streaming") == (0, 15)
    assert _minor("aiokafka") == (0, 14)
    assert _minor("anyio") == (4, 16)


async def test_aiokafka_consumer_keeps_fetch_max_wait_ms_and_its_fetcher_reads_it() -> None:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", fetch_max_wait_ms=1234)
    try:
        assert consumer._fetch_max_wait_ms == 1234
    finally:
        await consumer.stop()  # never started, but unclosed it warns (ResourceWarning) when collected
    # start() builds the Fetcher from the attribute: setting it before start is what takes effect
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)


def test_faust_consumer_thread_hooks_the_prompt_fetch_overrides_exist() -> None:
    assert callable(AIOKafkaConsumerThread._create_worker_consumer)
    assert callable(FaustAIOKafkaConsumer._new_consumer_thread)
    create = inspect.signature(AIOKafkaConsumerThread._create_worker_consumer)
    assert list(create.parameters)[:2] == ["self", "transport"]


def test_faust_consumer_keeps_read_offsets_and_seeks_in_its_thread() -> None:
    assert "_read_offset" in inspect.get_annotations(FaustConsumer)
    # what aggregate_resync does after seek_wait, as faust's own seek does
    assert "self._read_offset[ensure_TP(partition)] = offset" in inspect.getsource(FaustConsumer.seek)
    for name in ("seek_wait", "position", "earliest_offsets", "_getmany"):
        assert inspect.iscoroutinefunction(getattr(FaustAIOKafkaConsumer, name)), name
    # the fetch loop asks for each batch through the instance's _getmany, which the resync wraps
    assert "await self._getmany(" in inspect.getsource(FaustConsumer._wait_next_records)


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return faust.App(
        "dspex-pinned-internals",
        broker="kafka://127.0.0.1:9",
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
    )


async def test_a_faust_table_has_a_mutable_data_store_and_send_changelog(app: faust.App) -> None:
    schema: Any = faust.Schema(key_serializer="json", value_serializer="json")
    table = app.Table("probe", partitions=2, schema=schema)
    assert isinstance(table.data, MutableMapping)
    table.data["key"] = {"a": 1}
    assert table.data.get("key") == {"a": 1} and table.data.pop("key") == {"a": 1}
    parameters = inspect.signature(table.send_changelog).parameters
    assert list(parameters)[:3] == ["partition", "key", "value"]
    assert "value_serializer" in parameters


async def test_the_app_attributes_the_aggregator_reads_exist(app: faust.App) -> None:
    use_prompt_fetch(app)
    assert app.transport.Consumer.__name__ == "_PromptFetchConsumer"
    assert FETCH_MAX_WAIT_MS == 100
    assert (app.rebalancing, app.in_recovery, app.consumer_generation_id) == (False, False, 0)
    assert callable(app.assignor.assigned_actives)
    assert hasattr(app.tables, "recovery") or "recovery" in dir(type(app.tables))


def test_anyio_keeps_the_thread_state_that_marks_dspex_threads_as_its_workers() -> None:
    # dspex._anyio_worker sets anyio's private per-thread token so that anyio.from_thread.run
    # works from a sync forward run in dspex's own threads; without these it silently does nothing.
    import asyncio

    from anyio._backends._asyncio import backend_class
    from anyio._core._eventloop import threadlocals
    from anyio.lowlevel import EventLoopToken

    from dspex._anyio_worker import _find_marker

    assert _find_marker() == (threadlocals, EventLoopToken, backend_class)
    loop = asyncio.new_event_loop()
    try:
        token = EventLoopToken(backend_class, loop)
        assert token.native_token is loop
    finally:
        loop.close()
