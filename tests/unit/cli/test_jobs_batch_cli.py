"""`dspex eval --batch`: the job is submitted in batch mode (its LM calls via the provider's Batch API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import dspex
from dspex.cli import jobs

runner = CliRunner()


class _Client:
    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def evaluate(self, *args: Any, **options: Any) -> str:
        self.options.append(options)
        return "job-1"


@pytest.mark.parametrize(("flag", "mode"), [("--batch", "batch"), ("--online", "online"), (None, "online")])
def test_the_batch_flag_reaches_the_jobs_mode(
    flag: str | None, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _Client()

    @contextmanager
    def client_for(*args: Any, **kwargs: Any) -> Iterator[_Client]:
        yield client

    monkeypatch.setattr(jobs, "client_for", client_for)
    app = typer.Typer()
    jobs.register(app)
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    args += ["--lm", "openai/gpt-4o-mini", "--no-wait", "--json", *([flag] if flag else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"job_id": "job-1"}
    assert [options["mode"] for options in client.options] == [mode]
