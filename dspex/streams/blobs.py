"""Large example values through the blobs topic, so that no task outgrows the broker's message limit.

A client that submits an example whose input field encodes (as JSON) to more than
``BlobSettings.threshold_bytes`` writes that value to ``<prefix>.blobs`` in chunks of
``chunk_bytes`` (well below any broker's ``max.message.bytes``), each keyed ``<sha256>:<index>``,
all in the partition its first chunk landed in; the task carries a small reference instead::

    {"__dspex_blob__": {"sha256": "...", "size": 3145728, "chunks": 6, "partition": 2, "offset": 41}}

A predictor reads the chunks back from that partition and offset (:class:`BlobReader`), checks the
size and the hash, and runs the program on the value the client had; values are cached (bounded
by bytes) and fetched once however many tasks wait for them. A missing or corrupt value fails its
example only, with an :class:`~dspex.errors.InputError` saying which field and why.

Refused before anything is produced (:func:`plan_blobs`), naming the field and the example: an
input value over ``max_value_bytes``, and a label (a field that is not an input) over
``threshold_bytes``, since labels travel inline with the task, its prediction and its score.

    >>> plan = plan_blobs(rows, input_keys, BlobSettings())  # doctest: +SKIP
    >>> writer = BlobWriter(settings)
    >>> refs = await writer.write_all(producer, registry.name("blobs"), plan.values)  # doctest: +SKIP
    >>> row = plan.apply(0, rows[0], refs)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticSerializationError, from_json, to_json

from dspex.errors import ConfigurationError, InputError, KafkaError
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.producer import AsyncProducer, Delivery
from dspex.streams.topics import LARGE_MESSAGE_BYTES

__all__ = [
    "BLOB_REF_KEY",
    "BlobPlan",
    "BlobReader",
    "BlobRef",
    "BlobSettings",
    "BlobWriter",
    "blob_ref",
    "plan_blobs",
    "refs_of",
    "shrink",
]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.blobs")

R = TypeVar("R")

BLOB_REF_KEY = "__dspex_blob__"
HEADER_BLOB_CHUNK = "dspex-blob-chunk"
KIB = 1024
MIB = 1024 * KIB
# Room for the key, headers and batch framing next to a chunk under the topic's message limit.
_FRAMING_BYTES = 64 * KIB
# JSON writes a character as at most 6 bytes (\uXXXX): a shorter string cannot reach a threshold.
_MAX_JSON_BYTES_PER_CHAR = 6
_FETCH_BATCH = 64
_WRITTEN_KEPT = 10_000  # values a writer remembers having written


class BlobSettings(BaseModel):
    """When example values go through the blobs topic, and how large they may be.

    ``threshold_bytes``: an input value whose JSON is longer travels as chunks (default 256 KiB);
    ``max_value_bytes``: a longer value is refused before submitting (default 64 MiB);
    ``chunk_bytes``: the size of one chunk record (default 512 KiB, below Kafka's 1 MB default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold_bytes: int = Field(default=256 * KIB, ge=1)
    max_value_bytes: int = Field(default=64 * MIB, ge=1)
    chunk_bytes: int = Field(default=512 * KIB, ge=1, le=LARGE_MESSAGE_BYTES - _FRAMING_BYTES)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid BlobSettings: {exc}") from None

    @model_validator(mode="after")
    def _ordered(self) -> BlobSettings:
        if self.threshold_bytes > self.max_value_bytes:
            raise ValueError("threshold_bytes must not exceed max_value_bytes")
        return self


class BlobRef(BaseModel):
    """Where a value's chunks are: its hash and size, how many chunks, and the first one's position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    chunks: int = Field(ge=1)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)

    def wire(self) -> dict[str, Any]:
        """The reference as it stands in a task's example in place of the value."""
        return {BLOB_REF_KEY: self.model_dump()}

    def describe(self) -> str:
        return f"sha256 {self.sha256[:12]}..., {self.size:,} bytes in {self.chunks} chunk(s)"


def blob_ref(value: Any) -> BlobRef | None:
    """The reference ``value`` is (``{"__dspex_blob__": {...}}``), or None for any other value."""
    if not isinstance(value, dict) or len(value) != 1 or BLOB_REF_KEY not in value:
        return None
    try:
        return BlobRef.model_validate(value[BLOB_REF_KEY])
    except ValidationError as exc:
        raise InputError(f"a malformed blob reference: {exc}") from exc


# --------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class BlobPlan:
    """The large values of a submission: their bytes by hash, and which example field holds which."""

    values: dict[str, bytes] = field(default_factory=dict)
    fields: dict[int, dict[str, str]] = field(default_factory=dict)  # example index -> field -> hash

    def apply(self, index: int, row: dict[str, Any], refs: Mapping[str, BlobRef]) -> dict[str, Any]:
        """Example ``index``'s row with its large values replaced by their references."""
        large = self.fields.get(index)
        if not large:
            return row
        return {**row, **{name: refs[sha].wire() for name, sha in large.items()}}


def plan_blobs(
    rows: Sequence[Mapping[str, Any]], input_keys: Sequence[Sequence[str]], settings: BlobSettings
) -> BlobPlan:
    """Find the values that must travel as blobs; InputError (field and example named) for one too large."""
    plan, threshold = BlobPlan(), settings.threshold_bytes
    short_text = (threshold - 2) // _MAX_JSON_BYTES_PER_CHAR  # no string this long can be over it
    for index, (row, keys) in enumerate(zip(rows, input_keys, strict=True)):
        for name, value in row.items():
            if type(value) is str and len(value) <= short_text:
                continue  # the common case, decided without a call: this runs for every field
            encoded = _large_json(value, threshold)
            if encoded is None:
                continue
            _check_size(index, name, len(encoded), name in keys, settings)
            sha = hashlib.sha256(encoded).hexdigest()
            plan.values.setdefault(sha, encoded)
            plan.fields.setdefault(index, {})[name] = sha
    return plan


def _large_json(value: Any, threshold: int) -> bytes | None:
    """The JSON of ``value`` when longer than ``threshold`` bytes, else None (cheaply, for short text)."""
    if value is None or isinstance(value, bool | int | float):
        return None
    if isinstance(value, str) and len(value) * _MAX_JSON_BYTES_PER_CHAR + 2 <= threshold:
        return None
    try:
        encoded = to_json(value)
    except PydanticSerializationError:
        return None  # the task's own encoding reports it, as for any example
    return encoded if len(encoded) > threshold else None


def _check_size(index: int, name: str, size: int, is_input: bool, settings: BlobSettings) -> None:
    where = f"field {name!r} of example {index}"
    if not is_input:
        raise InputError(
            f"{where} is {size:,} bytes, and it is a label, not an input: labels travel inline with "
            f"each task, prediction and score, so at most BlobSettings.threshold_bytes "
            f"({settings.threshold_bytes:,}) bytes; shorten it or raise the threshold"
        )
    if size > settings.max_value_bytes:
        raise InputError(
            f"{where} is {size:,} bytes, over the limit of {settings.max_value_bytes:,} "
            "(BlobSettings.max_value_bytes); nothing was submitted"
        )


class BlobWriter:
    """Writes values as chunks; remembers what it wrote for ``reuse_s`` s, so repeated evaluations
    of the same examples (an optimizer's) do not upload the same images again."""

    def __init__(self, settings: BlobSettings | None = None, *, reuse_s: float = 3600.0) -> None:
        self.settings = settings or BlobSettings()
        self.reuse_s = reuse_s
        self._written: dict[tuple[str, str], tuple[BlobRef, float]] = {}

    async def write_all(
        self, producer: AsyncProducer, topic: str, values: Mapping[str, bytes]
    ) -> dict[str, BlobRef]:
        """Write every value (by hash) not written recently; every reference, once all are acknowledged."""
        refs = await asyncio.gather(*(self.write(producer, topic, sha, data) for sha, data in values.items()))
        return dict(zip(values, refs, strict=True))

    async def write(self, producer: AsyncProducer, topic: str, sha: str, data: bytes) -> BlobRef:
        """Write one value; its reference once the broker acknowledged every chunk."""
        known = self._written.get((topic, sha))
        if known is not None and time.monotonic() - known[1] < self.reuse_s:
            return known[0]
        size = self.settings.chunk_bytes
        chunks = [data[start : start + size] for start in range(0, len(data), size)] or [b""]
        # The first chunk picks the partition (murmur2 of its key); the others follow it there, so
        # a reader finds them all by reading one partition forward from the first one's offset.
        first = await producer.produce(topic, chunks[0], key=_key(sha, 0), headers=_headers(0, len(chunks)))
        pending = [await self._send(producer, first, sha, i, chunks) for i in range(1, len(chunks))]
        await asyncio.gather(*pending)
        ref = BlobRef(
            sha256=sha, size=len(data), chunks=len(chunks), partition=first.partition, offset=first.offset
        )
        self._remember(topic, ref)
        return ref

    def _remember(self, topic: str, ref: BlobRef) -> None:
        now = time.monotonic()
        if len(self._written) >= _WRITTEN_KEPT:  # bounded: expired entries go, then the oldest half
            fresh = {key: entry for key, entry in self._written.items() if now - entry[1] < self.reuse_s}
            self._written = (
                dict(list(fresh.items())[len(fresh) // 2 :]) if len(fresh) >= _WRITTEN_KEPT else fresh
            )
        self._written[(topic, ref.sha256)] = (ref, now)

    @staticmethod
    async def _send(
        producer: AsyncProducer, first: Delivery, sha: str, index: int, chunks: list[bytes]
    ) -> asyncio.Future[Delivery]:
        headers = _headers(index, len(chunks))
        return await producer.send(
            first.topic, chunks[index], key=_key(sha, index), headers=headers, partition=first.partition
        )


def _key(sha: str, index: int) -> str:
    return f"{sha}:{index}"


def _headers(index: int, count: int) -> list[tuple[str, bytes | None]]:
    return [(HEADER_BLOB_CHUNK, f"{index}/{count}".encode("ascii"))]


# --------------------------------------------------------------------------- worker side


class BlobReader:
    """Resolves blob references in a task's example (a predictor's; see the module docs).

    ``cache_bytes`` bounds the values kept in memory (least recently used go first);
    ``timeout_s`` bounds one value's fetch.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        cache_bytes: int = 256 * MIB,
        timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.cache_bytes = cache_bytes
        self.timeout_s = timeout_s
        self.fetched = 0  # values read from the topic (not from the cache)
        self._cache: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._cached_bytes = 0
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._consumer: Consumer | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dspex-blobs")

    async def __aenter__(self) -> BlobReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the consumer (if one was opened)."""
        await self._on_thread(self._close)
        self._thread.shutdown(wait=False)

    async def resolve(
        self, example: Mapping[str, Any], keys: Iterable[str], *, where: str = "the example"
    ) -> dict[str, Any]:
        """The ``keys`` fields of ``example`` with every reference replaced by its value.

        InputError naming the field and ``where`` when a value is missing or corrupt.
        """
        resolved: dict[str, Any] = {}
        for key in keys:
            if key not in example:
                continue
            value = example[key]
            ref = blob_ref(value)
            if ref is None:
                resolved[key] = value
                continue
            try:
                resolved[key] = await self.value(ref)
            except InputError as exc:
                raise InputError(f"input field {key!r} of {where}: {exc}") from exc
        return resolved

    async def value(self, ref: BlobRef) -> Any:
        """The value ``ref`` names, from the cache or the topic (one fetch for concurrent callers)."""
        cached = self._cache.get(ref.sha256)
        if cached is not None:
            self._cache.move_to_end(ref.sha256)
            return cached[0]
        loading = self._loading.get(ref.sha256)
        if loading is None:
            loading = asyncio.ensure_future(self._load(ref))
            self._loading[ref.sha256] = loading
            loading.add_done_callback(lambda _: self._loading.pop(ref.sha256, None))
        return await asyncio.shield(loading)

    async def _load(self, ref: BlobRef) -> Any:
        data = await self._on_thread(self._fetch, ref)
        self.fetched += 1
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise InputError(f"its value ({ref.describe()}) is corrupt: size or hash differ on {self.topic}")
        value = from_json(data)
        self._remember(ref, value)
        return value

    def _remember(self, ref: BlobRef, value: Any) -> None:
        if ref.size > self.cache_bytes:
            return
        self._cache[ref.sha256] = (value, ref.size)
        self._cached_bytes += ref.size
        while self._cached_bytes > self.cache_bytes:
            _, (_, size) = self._cache.popitem(last=False)
            self._cached_bytes -= size

    def _fetch(self, ref: BlobRef) -> bytes:
        """Read ``ref``'s chunks from its partition forward (runs on the reader's thread)."""
        consumer = self._open()
        partition = TopicPartition(self.topic, ref.partition, ref.offset)
        try:
            _, end = consumer.get_watermark_offsets(TopicPartition(self.topic, ref.partition), timeout=10)
            consumer.assign([partition])
            chunks = self._collect(consumer, ref, end)
        except KafkaException as exc:
            raise KafkaError(f"could not read {self.topic}: {exc}", topic=self.topic) from exc
        finally:
            consumer.unassign()
        return b"".join(chunks[index] for index in range(ref.chunks))

    def _collect(self, consumer: Consumer, ref: BlobRef, end: int) -> dict[int, bytes]:
        chunks: dict[int, bytes] = {}
        prefix = f"{ref.sha256}:".encode("ascii")
        position, deadline = ref.offset, time.monotonic() + self.timeout_s
        while len(chunks) < ref.chunks:
            if position >= end or time.monotonic() > deadline:
                raise InputError(
                    f"its value ({ref.describe()}) was not found on {self.topic} partition "
                    f"{ref.partition} from offset {ref.offset} ({len(chunks)} chunk(s) read): "
                    "deleted by retention, or written to another cluster"
                )
            for message in consume_ready(consumer, _FETCH_BATCH, 0.5):
                position = max(position, _chunk_into(chunks, message, prefix) + 1)
        return chunks

    def _open(self) -> Consumer:
        if self._consumer is None:
            config = client_config(
                self.settings,
                _librdkafka_logger,
                **{
                    # librdkafka wants a group id even for assign(); it is never joined or committed.
                    "group.id": f"dspex-blobs-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",  # an offset compacted away: read on from there
                    "queued.max.messages.kbytes": 16 * KIB,
                    # A fetch left waiting at the end of the last value's partition would hold the
                    # next value's first fetch for the broker's long poll (500 ms by default).
                    "fetch.wait.max.ms": 10,
                },
            )
            self._consumer = Consumer(config)
        return self._consumer

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    async def _on_thread(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))


def _chunk_into(chunks: dict[int, bytes], message: Message, prefix: bytes) -> int:
    """Keep ``message`` if it is one of the wanted chunks; its offset (-1 for an error event)."""
    if message.error() is not None:
        return -1
    key = message.key()
    if isinstance(key, bytes) and key.startswith(prefix):
        index = int(key[len(prefix) :])
        chunks.setdefault(index, message.value() or b"")
    return int(message.offset() or 0)


def shrink(value: Any, refs: Mapping[str, BlobRef]) -> Any:
    """``value`` (JSON-ready) with the top-level values that are one of ``refs`` put back as their
    references: a prediction's trace then carries the reference, not a copy of the image."""
    if not refs or not isinstance(value, dict):
        return value
    smallest = min(ref.size for ref in refs.values()) - 1
    return {key: _shrunk(item, refs, smallest) for key, item in value.items()}


def _shrunk(item: Any, refs: Mapping[str, BlobRef], threshold: int) -> Any:
    encoded = _large_json(item, threshold)
    if encoded is None:
        return item
    ref = refs.get(hashlib.sha256(encoded).hexdigest())
    return item if ref is None else ref.wire()


def refs_of(example: Mapping[str, Any]) -> dict[str, BlobRef]:
    """The references in ``example``'s fields, by hash."""
    found = (blob_ref(value) for value in example.values())
    return {ref.sha256: ref for ref in found if ref is not None}
