"""Job ids on the command line: unique prefixes, ambiguous ones listing their jobs, short ids, ages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer

from dspex.cli._ids import age, duration, matching, resolve_job, short_ids, submitted_at
from dspex.schemas import JobStatus, OptimizeStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _eval(job_id: str, minutes: int, name: str | None = None) -> JobStatus:
    return JobStatus(
        job_id=job_id, name=name, state="running", total_tasks=4, started_at=T0 + timedelta(minutes=minutes)
    )


class FakeStatuses:
    """The two reads resolution makes, over a fixed set of statuses."""

    def __init__(self, *statuses: Any) -> None:
        self.by_id = {status.job_id: status for status in statuses}
        self.listed = 0

    def status(self, job_id: str) -> Any:
        return self.by_id.get(job_id)

    def jobs(self) -> dict[str, Any]:
        self.listed += 1
        return dict(self.by_id)


SOURCE = FakeStatuses(
    _eval("abc123aa", 2, "first"),
    _eval("abc123bb", 1, "second"),
    OptimizeStatus(job_id="def456", state="completed", optimizer="bootstrap-rs"),
)


def test_an_exact_id_is_found_without_listing_every_job() -> None:
    source = FakeStatuses(_eval("abc123aa", 0))
    found = resolve_job(source, "abc123aa", where="t.status")
    assert found.job_id == "abc123aa" and found.status is not None
    assert source.listed == 0


def test_a_unique_prefix_names_its_job() -> None:
    found = resolve_job(SOURCE, "de", where="t.status")
    assert found.job_id == "def456" and found.status.kind == "optimize"
    assert resolve_job(SOURCE, "ABC123A", where="t.status").job_id == "abc123aa"  # hex ids: any case


def test_an_ambiguous_prefix_is_bad_usage_listing_the_candidates_oldest_first() -> None:
    with pytest.raises(typer.BadParameter) as raised:
        resolve_job(SOURCE, "abc", where="t.status")
    message = raised.value.message
    assert "'abc' matches 2 jobs" in message
    assert message.index("abc123bb") < message.index("abc123aa")  # bb started a minute earlier
    assert "'second'" in message and "running" in message


def test_an_unknown_id_exits_1_naming_the_topic(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as raised:
        resolve_job(SOURCE, "zzz", where="t.status")
    assert raised.value.exit_code == 1
    assert "no job zzz on t.status" in capsys.readouterr().err


def test_an_id_only_on_the_jobs_topic_resolves_without_a_status() -> None:
    found = resolve_job(SOURCE, "fresh", where="t.status", submitted=lambda job_id: job_id == "fresh")
    assert (found.job_id, found.status) == ("fresh", None)


def test_an_empty_id_is_bad_usage() -> None:
    with pytest.raises(typer.BadParameter):
        resolve_job(SOURCE, "  ", where="t.status")


def test_matching_is_sorted() -> None:
    assert matching("ab", ["abd", "xab", "abc"]) == ["abc", "abd"]


def test_short_ids_grow_only_where_two_ids_share_the_first_characters() -> None:
    ids = ["0123456789abcdef", "0123456789abcdxx", "ffff0000ffff0000"]
    assert short_ids(ids, length=8) == {
        "0123456789abcdef": "0123456789abcde",
        "0123456789abcdxx": "0123456789abcdx",
        "ffff0000ffff0000": "ffff0000",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-3, "0s"), (42.9, "42s"), (185, "3m05s"), (8040, "2h14m"), (273600, "3d04h")],
)
def test_durations_are_short(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_age_and_submit_time() -> None:
    status = _eval("x", 0)
    assert submitted_at(status) == T0
    assert age(submitted_at(status), T0 + timedelta(seconds=75)) == "1m15s"
    unstarted = JobStatus(job_id="y", state="pending", total_tasks=1, updated_at=T0)
    assert submitted_at(unstarted) == T0  # no started_at yet: its first update stands in
