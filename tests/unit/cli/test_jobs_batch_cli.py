"""`dspex eval --batch`: the job is submitted in batch mode (its LM calls via the provider's Batch API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

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
    flag: str | None,
    mode: str,
    jobs_app: typer.Typer,
    eval_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _Client()

    @contextmanager
    def client_for(*args: Any, **kwargs: Any) -> Iterator[_Client]:
        yield client

    monkeypatch.setattr(jobs, "client_for", client_for)
    more = ["--lm", "openai/gpt-4o-mini", "--no-wait", "--json", *([flag] if flag else [])]
    result = runner.invoke(jobs_app, [*eval_args, *more])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"job_id": "job-1"}
    assert [options["mode"] for options in client.options] == [mode]
