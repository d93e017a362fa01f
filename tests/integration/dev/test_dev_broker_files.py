"""The files the dev broker ships: the package's copies must be the repository's infra/kafka files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from dspex.dev import kafka_version
from dspex.dev._system import new_cluster_id

INFRA = Path(__file__).resolve().parents[3] / "infra" / "kafka"


@pytest.mark.parametrize(
    ("packaged", "repository"),
    [("kafka-pom.xml", "pom.xml"), ("kafka-log4j2.properties", "log4j2.properties")],
)
def test_packaged_copy_is_identical_to_infra(packaged: str, repository: str) -> None:
    shipped = resources.files("dspex.dev").joinpath(packaged).read_text(encoding="utf-8")
    assert shipped == (INFRA / repository).read_text(encoding="utf-8")


def test_kafka_version_comes_from_the_pom() -> None:
    assert kafka_version() == "4.1.1"


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(2000)}  # about 1 in 64 raw draws starts with "-"
    assert len(ids) == 2000
    assert all(len(value) == 22 and not value.startswith("-") for value in ids)
