"""A DevBroker reaps the child it started, even when another DevBroker (or the CLI) stopped it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dspex.dev import DevBroker


def test_stop_reaps_a_child_that_another_instance_already_stopped(tmp_path: Path) -> None:
    broker = DevBroker(port=1, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    # stands in for the broker process this object spawned; it has exited, nobody waited for it
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    broker._process = child
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it exits, left a zombie
    assert child.returncode is None

    assert broker.stop() is None  # no pid file: the other instance removed it
    assert child.returncode == 0
    assert broker._process is None
