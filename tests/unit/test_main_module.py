"""`python -m dspex` runs the CLI, as the `dspex` script does."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "dspex", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_python_m_dspex_help_lists_the_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "dspex" in result.stdout
    assert "Example: dspex" in result.stdout
    for command in ("worker", "topics", "jobs", "dev"):
        assert command in result.stdout


def test_python_m_dspex_reports_bad_usage_with_exit_code_2() -> None:
    result = _run("no-such-command")
    assert result.returncode == 2
    assert "no-such-command" in result.stderr
