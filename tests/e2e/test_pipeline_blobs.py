"""Large example values go through the blobs topic and the programs run on them as locally (issue 19).

Arithmetic questions with an ``Image`` input (PNGs of some 2.5 MB, made here; one small image too)
and with a ``History`` input (some histories hold a long passage), through Kafka on the simulated
LM (a simulation, not a model; it hashes the image parts with the rest, so its answers depend on
the image): the per-example results equal local ``Evaluate``'s. The large values really travelled
as chunks of the blobs topic (read back here, reassembled and hashed) and the tasks carried small
references; a value over the client's limit, and an image that cannot be read, are refused with
the field and the example named before anything is produced; a value the predictors cannot find
fails its example only, with the field named, before any LM call.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, read_topic, sim_lm
from pydantic_core import to_json

from dspex.adapters.types import History, Image
from dspex.client import Client
from dspex.configuration import context
from dspex.errors import InputError
from dspex.modules import Predict
from dspex.primitives import Example, Module
from dspex.schemas import HEADER_JOB_ID
from dspex.signatures import InputField, OutputField, Signature
from dspex.streams.admin import KafkaAdmin
from dspex.streams.blobs import BLOB_REF_KEY, BlobRef, BlobSettings
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 12
PASSAGE = "The committee met again to discuss the budget. " * 8000  # ~380 KiB: over 256 KiB
TASK_BYTES_MAX = 64 * 1024  # a task or prediction with references instead of values stays this small


class ImageQuestion(Signature):
    """Answer the arithmetic question with a number."""

    question: str = InputField()
    image: Image = InputField()
    answer: str = OutputField()


class HistoryQuestion(Signature):
    """Answer the arithmetic question with a number."""

    history: History = InputField()
    question: str = InputField()
    answer: str = OutputField()


def png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG of random pixels, stored uncompressed (so its size is about 3 x w x h)."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def image_examples() -> list[Example]:
    big = [Image(png(1000, 850, seed)) for seed in (1, 2)]  # ~2.5 MB each, ~3.4 MB as data URIs
    small = Image(png(8, 8, 3))
    rows = devset(EXAMPLES, seed=11)
    images = [small if i == 0 else big[i % 2] for i in range(EXAMPLES)]
    return [
        row.copy(image=image).with_inputs("question", "image")
        for row, image in zip(rows, images, strict=True)
    ]


def history_examples() -> list[Example]:
    rows = devset(EXAMPLES, seed=12)
    examples = []
    for index, row in enumerate(rows):
        context_text = PASSAGE + str(index) if index % 3 == 0 else f"short note {index}"
        history = History(messages=[{"question": "What was discussed?", "answer": context_text}])
        examples.append(row.copy(history=history).with_inputs("history", "question"))
    return examples


def blob_hash(value: Any) -> str:
    """The hash under which a value travels: sha256 of its JSON, as the task would have carried it."""
    return hashlib.sha256(to_json(value)).hexdigest()


def chunks_on_topic(pipeline: Pipeline, wanted: set[str]) -> dict[str, dict[int, bytes]]:
    found: dict[str, dict[int, bytes]] = {}
    for message in read_topic(pipeline.settings, pipeline.registry.name("blobs")):
        sha, _, index = bytes(message.key()).decode().partition(":")
        if sha in wanted:
            found.setdefault(sha, {})[int(index)] = bytes(message.value())
    return found


def topic_ends(pipeline: Pipeline) -> dict[tuple[str, int], int]:
    admin = KafkaAdmin(pipeline.settings)
    names = [pipeline.registry.name(role) for role in ("blobs", "candidates", "jobs", "tasks")]
    counts = admin.partition_counts(names)
    return admin.end_offsets([(name, p) for name in names for p in range(counts[name])])


def run_both(pipeline: Pipeline, program: Module, examples: list[Example], lm: Any) -> tuple[Any, Any, str]:
    job_id = pipeline.submit([program], examples, lm, name="blobs")
    status = pipeline.finish(job_id)
    assert (status.state, status.errors) == ("completed", 0), status
    [remote] = pipeline.client.collect(job_id)
    return remote, local_evaluate(program, examples, lm), job_id


def test_images_and_histories_travel_as_blobs_and_score_as_locally(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    lm = sim_lm(sim_factory(), cache_dir)
    images, histories = image_examples(), history_examples()
    runs = (
        (Predict(ImageQuestion), images, EXAMPLES - 1),  # all but the small image
        (Predict(HistoryQuestion), histories, EXAMPLES // 3),  # the long histories
    )
    for program, examples, with_blobs in runs:
        remote, local, job_id = run_both(shared_pipeline, program, examples, lm)
        assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
        assert per_example(remote) == per_example(local)
        assert remote.score == local.score
        assert remote.usage.lm_calls == EXAMPLES
        tasks = [
            message
            for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("tasks"))
            if dict(message.headers() or []).get(HEADER_JOB_ID) == job_id.encode()
        ]
        assert len(tasks) == EXAMPLES
        assert max(len(message.value()) for message in tasks) < TASK_BYTES_MAX
        assert sum(BLOB_REF_KEY.encode() in message.value() for message in tasks) == with_blobs
        # the results carry the references too (example and trace), not copies of the values: the
        # scores the predictors wrote (a built-in metric is scored where the prediction is made)
        scores = [
            message
            for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("scores"))
            if dict(message.headers() or []).get(HEADER_JOB_ID) == job_id.encode()
        ]
        assert len(scores) == EXAMPLES
        assert max(len(message.value()) for message in scores) < TASK_BYTES_MAX

    big_values = {blob_hash(example.to_dict()["image"]) for example in images[1:]}
    long_histories = {blob_hash(example.to_dict()["history"]) for example in histories[::3]}
    wanted = big_values | long_histories
    assert len(big_values) == 2 and len(long_histories) == EXAMPLES // 3
    found = chunks_on_topic(shared_pipeline, wanted)
    assert set(found) == wanted  # every large value went through the blobs topic, once
    for sha, chunks in found.items():
        data = b"".join(chunks[i] for i in range(len(chunks)))
        assert hashlib.sha256(data).hexdigest() == sha
        assert max(len(chunk) for chunk in chunks.values()) <= BlobSettings().chunk_bytes
    assert max(len(found[sha]) for sha in big_values) >= 6  # a 3.4 MB value in 512 KiB chunks


def test_values_over_the_limit_and_unreadable_images_are_refused_before_submitting(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory()
    lm = sim_lm(sim, cache_dir)
    examples = image_examples()[:4]
    not_an_image = Image("data:image/png;base64,bm90IGFuIGltYWdl")  # "not an image"
    bad = [*examples[:2], examples[2].copy(image=not_an_image)]
    before = topic_ends(shared_pipeline)
    limited = BlobSettings(max_value_bytes=1024 * 1024)
    with Client(shared_pipeline.bootstrap, prefix=shared_pipeline.prefix, blobs=limited) as client:
        with context(lm=lm), pytest.raises(InputError, match=r"field 'image' of example 1 is [\d,]+ bytes"):
            client.evaluate(Predict(ImageQuestion), examples, "numeric_equal:answer", display_progress=False)
        with (
            context(lm=lm),
            pytest.raises(InputError, match=r"field 'image' of example 2: the image cannot be read"),
        ):
            client.evaluate(Predict(ImageQuestion), bad, "numeric_equal:answer", display_progress=False)
    assert topic_ends(shared_pipeline) == before  # nothing was produced
    assert sim.control.stats()["requests_total"] == 0


def test_a_value_missing_from_the_blobs_topic_fails_only_its_example(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory()
    lm = sim_lm(sim, cache_dir)
    examples = history_examples()[:4]  # examples 0 and 3 hold long histories
    # a history no other test sent: predictors cache values by hash, so it must be new to them
    unseen = History(messages=[{"question": "What was lost?", "answer": PASSAGE + "lost"}])
    examples[0] = examples[0].copy(history=unseen)
    lost = examples[0].to_dict()["history"]
    size = len(to_json(lost))
    # The client's writer believes it wrote the value at an offset the partition never reached
    # (as if retention had deleted it): the task goes out with a reference to nothing.
    nowhere = BlobRef(sha256=blob_hash(lost), size=size, chunks=1, partition=0, offset=10**12)
    key = (shared_pipeline.registry.name("blobs"), nowhere.sha256)
    written = shared_pipeline.client._blobs._written
    written[key] = (nowhere, time.monotonic())
    try:
        job_id = shared_pipeline.submit([Predict(HistoryQuestion)], examples, lm, name="lost-blob")
        status = shared_pipeline.finish(job_id)
    finally:
        written.pop(key, None)
    assert (status.state, status.done, status.errors) == ("completed", 4, 1)
    [result] = shared_pipeline.client.collect(job_id)
    errors = {record.index: record.error for record in result.records if record.error}
    assert list(errors) == [0]
    assert "input field 'history' of example 0" in str(errors[0]) and "was not found" in str(errors[0])
    assert sim.control.stats()["requests_total"] == 3  # no LM call for the example without its input
