"""Fixtures of the CLI tests: root commands with one command group registered, and an eval's files."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

import dspex
from dspex.cli import jobs, worker


@pytest.fixture
def worker_app() -> typer.Typer:
    """A root command with `dspex worker` registered (as `dspex` registers it)."""
    root = typer.Typer()
    root.command("noop")(lambda: None)  # a second command keeps `worker` a sub-command
    worker.register(root)
    return root


@pytest.fixture
def jobs_app() -> typer.Typer:
    """A root command with the jobs commands (`eval`, `status`, ...) registered."""
    root = typer.Typer()
    jobs.register(root)
    return root


@pytest.fixture
def eval_args(tmp_path: Path) -> list[str]:
    """`dspex eval` of a saved question -> answer program on a one-example devset (no options)."""
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    return ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
