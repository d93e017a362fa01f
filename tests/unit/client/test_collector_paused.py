"""The client pauses the garbage collector only while it builds results, and leaves it as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dspex.client import _cluster
from dspex.client._collector import collector_paused
from dspex.schemas import ScoreRecord
from dspex.schemas.serde import encode


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_off_inside_and_back_on_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_error_inside() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("a record that does not decode")
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


class _Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def key(self) -> bytes:
        return b"j"

    def value(self) -> bytes:
        return self._value


def test_the_score_tail_decodes_a_batch_with_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    decode_scores = _cluster._scores

    def watched(values: object, record_type: type[ScoreRecord] = ScoreRecord) -> list[ScoreRecord]:
        seen.append(gc.isenabled())
        return decode_scores(values, record_type)  # type: ignore[arg-type]

    monkeypatch.setattr(_cluster, "_scores", watched)
    gc.enable()
    record = ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t0", outputs={}, score=1.0)
    tail = _cluster.ScoreTail.__new__(_cluster.ScoreTail)
    tail._job_id, tail._records = "j", []
    tail._take([_Message(encode(record))])  # type: ignore[list-item]
    assert seen == [False]
    assert [r.task_id for r in tail._records] == ["t0"]
    assert gc.isenabled()
