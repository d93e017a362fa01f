"""Values written to the blobs topic in chunks come back whole, once, or as a clear InputError."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from pydantic_core import to_json

from dspex.errors import InputError
from dspex.streams.blobs import BlobReader, BlobRef, BlobSettings, BlobWriter
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SMALL_CHUNKS = BlobSettings(threshold_bytes=1000, chunk_bytes=4096)


def encoded(value: object) -> tuple[str, bytes]:
    data = to_json(value)
    return hashlib.sha256(data).hexdigest(), data


async def test_a_value_round_trips_in_chunks_and_is_fetched_once(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    topic = registry.name("blobs")
    value = {"messages": [{"question": "q", "answer": "a long passage " * 3000}]}
    sha, data = encoded(value)
    writer = BlobWriter(SMALL_CHUNKS)
    async with AsyncProducer(settings) as producer:
        ref = await writer.write(producer, topic, sha, data)
        assert await writer.write(producer, topic, sha, data) is ref  # remembered: not written again
        sent = producer.stats.sent
    assert ref.chunks == -(-len(data) // 4096) and ref.chunks > 5 and sent == ref.chunks
    async with BlobReader(settings, topic) as reader:
        example = {"history": ref.wire(), "question": "q", "answer": "4"}
        first, second = await asyncio.gather(
            reader.resolve(example, ["history", "question"]), reader.resolve(example, ["history"])
        )
        assert first == {"history": value, "question": "q"} and second == {"history": value}
        assert reader.fetched == 1  # concurrent callers shared one read; later ones hit the cache


async def test_a_missing_or_corrupt_value_is_an_input_error_naming_the_field(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    topic = registry.name("blobs")
    sha, data = encoded("x" * 20_000)
    async with AsyncProducer(settings) as producer:
        real = await BlobWriter(SMALL_CHUNKS).write(producer, topic, sha, data)
        # chunks under another value's hash: what a reader finds does not hash to what it asked for
        forged_sha = hashlib.sha256(b"something else").hexdigest()
        forged = await BlobWriter(SMALL_CHUNKS).write(producer, topic, forged_sha, data)
    missing = BlobRef(sha256="0" * 64, size=10, chunks=1, partition=real.partition, offset=real.offset)
    async with BlobReader(settings, topic, timeout_s=10) as reader:
        with pytest.raises(InputError, match=r"input field 'image' of example 3: .* was not found on"):
            await reader.resolve({"image": missing.wire()}, ["image"], where="example 3")
        with pytest.raises(InputError, match="is corrupt: size or hash differ"):
            await reader.resolve({"image": forged.wire()}, ["image"])
        assert await reader.resolve({"image": real.wire()}, ["image"]) == {"image": "x" * 20_000}
