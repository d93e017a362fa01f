"""Aggregator state folders: a start removes the folders no live process owns, and only those.

Owners are real processes: a child that claims a folder and keeps running, or is killed with
SIGKILL (the kernel then releases its lock, as it would for a crashed aggregator).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.errors import ConfigurationError
from dspex.processors.aggregate_folders import LOCK_NAME, claim_state_folder, remove_stale_folders

_OWNER = """
import sys, time
from pathlib import Path
from dspex.processors.aggregate_folders import claim_state_folder
claim_state_folder(Path(sys.argv[1]), sys.argv[2])
print("claimed", flush=True)
time.sleep(60)
"""


@pytest.fixture
def owners() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_owner(owners: list[subprocess.Popen[str]], data_dir: Path, worker_id: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(data_dir), worker_id], stdout=subprocess.PIPE, text=True
    )
    owners.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "claimed"
    return process


def test_a_start_removes_dead_owners_folders_and_keeps_live_and_unknown_ones(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    live = start_owner(owners, tmp_path, "aggregate-live")
    dead = start_owner(owners, tmp_path, "aggregate-dead")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    (tmp_path / "aggregate-dead" / "v1" / "tables").mkdir(parents=True)  # what faust leaves there
    (tmp_path / "aggregate-older").mkdir()  # no owner.lock: nothing proves it is unused
    foreign = tmp_path / "someone-else"
    foreign.mkdir()
    (foreign / LOCK_NAME).write_text("backup pid=1\n")  # a lock file, but not an aggregator's

    mine = claim_state_folder(tmp_path, "aggregate-new")
    try:
        removed = remove_stale_folders(tmp_path, keep=mine.path)
        assert removed == [tmp_path / "aggregate-dead"]
        left = sorted(path.name for path in tmp_path.iterdir())
        assert left == ["aggregate-live", "aggregate-new", "aggregate-older", "someone-else"]
        assert live.poll() is None
    finally:
        mine.release()
    # once released, the folder is stale for the next start
    after = claim_state_folder(tmp_path, "aggregate-next")
    try:
        assert tmp_path / "aggregate-new" in remove_stale_folders(tmp_path, keep=after.path)
    finally:
        after.release()


def test_a_folder_a_live_aggregator_owns_cannot_be_claimed_again(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    start_owner(owners, tmp_path, "aggregate-fixed")
    with pytest.raises(ConfigurationError, match="another running aggregator owns"):
        claim_state_folder(tmp_path, "aggregate-fixed")


def test_a_stale_folder_with_a_fixed_worker_id_is_taken_over(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    first = start_owner(owners, tmp_path, "aggregate-fixed")
    first.kill()
    first.wait()
    again = claim_state_folder(tmp_path, "aggregate-fixed")
    try:
        assert again.path == tmp_path / "aggregate-fixed"
        assert remove_stale_folders(tmp_path, keep=again.path) == []
        assert (again.path / LOCK_NAME).read_text().startswith("aggregate pid=")
    finally:
        again.release()
