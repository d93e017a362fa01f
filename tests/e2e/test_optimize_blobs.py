"""An optimization whose examples hold images: the values go through the blobs topic, not the job.

BootstrapFewShotWithRandomSearch over a ``Predict`` with an ``Image`` input, on 4 train and 4
validation examples each holding a PNG of about 1 MB (some 1.3 MB as a data URI), first locally
(the reference), then through Kafka with ``dspex worker optimize``, on the same deterministic
simulated LM (a simulation, not a model; it hashes the image parts with the rest of the prompt).
The job message carries references instead of the images and stays small; the optimize worker
reads the values back and gives the local run's best program and trial history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_optimize import OptimizeCase, local_run, optimize_like_local, start_cluster
from e2e_pipeline import Pipeline, devset, read_topic, sim_lm
from pydantic_core import to_json
from test_pipeline_blobs import ImageQuestion, png

from dspex.adapters.types import Image
from dspex.modules import Predict
from dspex.primitives import Example, Module
from dspex.schemas import OptimizeJob, decode
from dspex.streams.blobs import BLOB_REF_KEY
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

JOB_BYTES_MAX = 64 * 1024  # the job with 8 references; inline, its images alone are over 10 MB


def image_examples(seed: int) -> list[Example]:
    rows = devset(4, seed=seed)
    images = [Image(png(600, 560, seed * 10 + i)) for i in range(4)]  # ~1 MB each, all different
    return [
        row.copy(image=image).with_inputs("question", "image")
        for row, image in zip(rows, images, strict=True)
    ]


def image_program() -> Module:
    return Predict(ImageQuestion)


def test_an_optimization_over_images_sends_them_as_blobs_and_runs_as_locally(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    case = OptimizeCase(
        "bootstrap-rs",
        knobs={"num_candidate_programs": 1, "max_bootstrapped_demos": 1, "max_labeled_demos": 1},
        seed=3,
        train=image_examples(seed=21),
        val=image_examples(seed=22),
        program=image_program,
    )
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, case)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    status = optimize_like_local(pipeline, lm, case, reference)
    assert status.best_score is not None

    [job_message] = [
        message
        for message in read_topic(pipeline.settings, pipeline.registry.name("jobs"))
        if b'"optimizer"' in message.value() and status.job_id.encode() in message.value()
    ]
    assert len(job_message.value()) < JOB_BYTES_MAX
    job = decode(job_message.value(), OptimizeJob)
    assert job.trainset.examples is not None and job.valset is not None and job.valset.examples is not None
    rows = [*job.trainset.examples, *job.valset.examples]
    assert all(BLOB_REF_KEY in row["image"] for row in rows)  # each image by reference
    wanted = {hashlib.sha256(to_json(e.to_dict()["image"])).hexdigest() for e in [*case.train, *case.val]}
    assert {row["image"][BLOB_REF_KEY]["sha256"] for row in rows} == wanted
    assert all(row["image"][BLOB_REF_KEY]["size"] > 1_000_000 for row in rows)
    keys = {
        bytes(m.key()).split(b":")[0].decode()
        for m in read_topic(pipeline.settings, pipeline.registry.name("blobs"))
    }
    assert wanted <= keys  # the values are on the blobs topic
